//! Command-line interface of `microfaasctl`: one module per subcommand.

pub mod image;
