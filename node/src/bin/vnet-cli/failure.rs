//! Why a command failed: the one line it prints on stderr, and exit status 1.

use std::fmt;
use std::io;

/// Why the command failed: the line for stderr (if any); exit status 1.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// One line for stderr.
    Line(String),
    /// Nothing more to say (e.g. a ping that got no reply: its lines said so).
    Silent,
}

impl Failure {
    /// `<code> <command> <message>`: an error the node answered.
    pub fn http(code: u16, command: &str, message: &str) -> Self {
        Failure::Line(format!("{code} {command} {message}"))
    }

    /// A bad argument, refused before any request, as the node would (400).
    pub fn bad_argument(command: &str, message: &str) -> Self {
        Failure::http(400, command, message)
    }

    /// Nothing answered on the API port.
    pub fn unreachable(port: u16, reason: &str) -> Self {
        Failure::Line(format!(
            "vnet-cli: cannot reach vnet-node at 127.0.0.1:{port} (is it running?): {reason}"
        ))
    }

    /// A problem found here rather than by the node.
    pub fn local(message: impl fmt::Display) -> Self {
        Failure::Line(format!("vnet-cli: {message}"))
    }
}

/// Writing to stdout failed (e.g. a closed pipe): stop quietly.
impl From<io::Error> for Failure {
    fn from(_: io::Error) -> Self {
        Failure::Silent
    }
}
