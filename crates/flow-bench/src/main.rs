//! `flow-bench`: see the library's documentation and `flow-bench --help`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", flow_bench::USAGE);
        return;
    }
    let args = flow_bench::Args::parse(args).unwrap_or_else(|message| {
        eprintln!("{message}");
        std::process::exit(2);
    });
    if let Err(message) = flow_bench::run(args) {
        eprintln!("flow-bench: {message}");
        std::process::exit(1);
    }
}
