# Convenience recipes; each mirrors a plain command from the README.

# The main job on the embedded defaults.
demo:
    cargo run -- demo

# Install toolchains (idempotent) and run every test.
test:
    bash scripts/setup.sh
    cargo test --workspace

# Benchmarks (criterion); ratios are printed.
bench:
    cargo bench -p vivarium --bench runtime
