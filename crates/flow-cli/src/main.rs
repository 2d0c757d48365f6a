fn main() -> std::process::ExitCode {
    flow_cli::main()
}
