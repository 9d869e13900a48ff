use std::process::ExitCode;

fn main() -> ExitCode {
    ofctl::cli::main()
}
