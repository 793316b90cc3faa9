//! The microfaas command-line tool; everything lives in `microfaas::cli`.

fn main() -> std::process::ExitCode {
    microfaas::cli::main()
}
