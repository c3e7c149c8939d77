//! The `vivarium` command: a thin layer over the library that parses
//! arguments, prints results and exits with the contract's codes.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
