//! The worker agent binary: all the work is in `microfaas::agent`.

fn main() {
    std::process::exit(microfaas::agent::main());
}
