//! Exit codes of the command-line contract: 0 ok, 1 error, 2 usage, 3 an audit found a
//! problem (or a server did not converge), 4 waiting for a confirmation no terminal can give.

use std::fmt;

#[derive(Debug)]
pub enum Failure {
    /// Something failed; the message says what.
    Error(String),
    /// The command line was wrong in a way clap could not tell.
    Usage(String),
    /// The command failed and already printed why.
    Reported,
    /// An audit found a problem and printed it (exit 3).
    Audit,
    /// Failed with a specific exit code of the contract (3: did not converge, 4: waiting
    /// for a confirmation no terminal can give); the message says what.
    Code(i32, String),
}

impl Failure {
    pub fn exit(self) -> ! {
        match self {
            Failure::Error(m) => {
                eprintln!("atrest: error: {m}");
                std::process::exit(1)
            }
            Failure::Usage(m) => {
                eprintln!("atrest: {m}");
                std::process::exit(2)
            }
            Failure::Reported => std::process::exit(1),
            Failure::Audit => std::process::exit(3),
            Failure::Code(code, m) => {
                eprintln!("atrest: error: {m}");
                std::process::exit(code)
            }
        }
    }
}

impl<E: fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Error(e.to_string())
    }
}

pub type CmdResult = Result<(), Failure>;
