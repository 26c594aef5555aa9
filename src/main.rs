//! tinyrt: an OCI runtime with runc's command line. All logic lives in the library;
//! this file only hands the process arguments to the CLI layer and exits with its code.

fn main() {
    std::process::exit(tinyrt::cli::main());
}
