//! `proxbalance`: plans offline from a JSON cluster view.

fn main() -> std::process::ExitCode {
    proxbalance_recommender::cli::main()
}
