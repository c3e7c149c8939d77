//! `vivarium init <dir> --lang rust|python|javascript|c|wat`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use vivarium::caps::Language;

use super::output::Out;

/// Arguments of `vivarium init`.
#[derive(Args)]
pub struct InitArgs {
    /// Where to write the variant (must not exist, or be empty).
    pub dir: PathBuf,
    /// The variant's language: rust, python, javascript, c or wat.
    #[arg(long, value_parser = parse_language)]
    pub lang: Language,
    /// The variant's name (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
}

fn parse_language(s: &str) -> Result<Language, String> {
    s.parse()
}

pub fn init(a: InitArgs, out: &Out) -> ExitCode {
    match vivarium::init::init(&a.dir, a.lang, a.name.as_deref()) {
        Ok(done) => {
            out.print(&json!({ "status": "ok", "result": done }), || {
                format!(
                    "{} variant `{}` written to {} ({})\n  next: vivarium build {}   (see {}/README.md)",
                    done.language,
                    done.name,
                    done.dir.display(),
                    done.files.join(", "),
                    done.dir.display(),
                    done.dir.display(),
                )
            });
            ExitCode::SUCCESS
        }
        Err(e) => out.error(&e),
    }
}
