//! CLI behaviour pinned by snapshot files: `tests/cmd/*.toml` hold the command and exit status,
//! `*.stdout`/`*.stderr` the exact output. Regenerate after a deliberate change with
//! `TRYCMD=overwrite cargo test --test cli`.

#[test]
fn cli_snapshots() {
    trycmd::TestCases::new()
        .env("NO_COLOR", "1")
        .env("CI", "true")
        .case("tests/cmd/*.toml");
}
