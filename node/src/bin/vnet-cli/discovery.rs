//! Where the node's API is and the token it wants: from the flags, else from
//! the node's home directory.

use std::fs;
use std::io;
use std::path::Path;

use crate::failure::Failure;

/// The node's home directory unless `-D` says otherwise.
pub const DEFAULT_HOME: &str = "/var/lib/vnet";
/// The API port when neither `-p` nor `HOME/vnet.port` gives one.
pub const DEFAULT_PORT: u16 = 9993;
/// The file where the node writes its port.
const PORT_FILE: &str = "vnet.port";
/// The file holding the API token.
const TOKEN_FILE: &str = "authtoken.secret";

/// The port from `-p`, else from `HOME/vnet.port`, else the default.
pub fn resolve_port(given: Option<u16>, home: &Path) -> Result<u16, Failure> {
    if let Some(port) = given {
        return Ok(port);
    }
    let file = home.join(PORT_FILE);
    match fs::read_to_string(&file) {
        Ok(text) => match text.trim().parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(Failure::local(format_args!(
                "bad port number in {}: {:?} (use -p PORT)",
                file.display(),
                text.trim()
            ))),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DEFAULT_PORT),
        Err(e) => Err(Failure::local(format_args!(
            "cannot read the API port from {}: {e} (use -p PORT)",
            file.display()
        ))),
    }
}

/// The token from `-T`, else the content of `HOME/authtoken.secret`
/// (surrounding white space trimmed).
pub fn resolve_token(given: Option<&str>, home: &Path) -> Result<String, Failure> {
    let (token, source) = match given {
        Some(token) => (token.trim().to_string(), "given with -T".to_string()),
        None => {
            let file = home.join(TOKEN_FILE);
            let text = fs::read_to_string(&file).map_err(|e| {
                Failure::local(format_args!(
                    "cannot read the auth token from {}: {e} (use -T TOKEN, or -D for another home)",
                    file.display()
                ))
            })?;
            (text.trim().to_string(), format!("in {}", file.display()))
        }
    };
    if token.is_empty() {
        return Err(Failure::local(format_args!(
            "the auth token {source} is empty"
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Failure::local(format_args!(
            "the auth token {source} has characters other than printable ASCII"
        )));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(result: Result<(), Failure>) -> String {
        match result {
            Err(Failure::Line(line)) => line,
            other => panic!("expected a failure line, got {other:?}"),
        }
    }

    #[test]
    fn port_and_token_from_home() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path();
        assert_eq!(resolve_port(None, dir).unwrap(), DEFAULT_PORT);
        assert_eq!(resolve_port(Some(7), dir).unwrap(), 7);
        fs::write(dir.join(PORT_FILE), "12345\n").unwrap();
        assert_eq!(resolve_port(None, dir).unwrap(), 12345);
        fs::write(dir.join(PORT_FILE), "zap").unwrap();
        assert!(line(resolve_port(None, dir).map(|_| ())).contains("vnet.port"));

        let missing = line(resolve_token(None, dir).map(|_| ()));
        assert!(
            missing.starts_with(&format!(
                "vnet-cli: cannot read the auth token from {}",
                dir.join(TOKEN_FILE).display()
            )),
            "{missing}"
        );
        fs::write(dir.join(TOKEN_FILE), "  abcDEF123\n").unwrap();
        assert_eq!(resolve_token(None, dir).unwrap(), "abcDEF123");
        assert_eq!(resolve_token(Some("given"), dir).unwrap(), "given");
        fs::write(dir.join(TOKEN_FILE), "\n").unwrap();
        assert!(line(resolve_token(None, dir).map(|_| ())).contains("is empty"));
        assert!(line(resolve_token(Some("a b"), dir).map(|_| ())).contains("printable ASCII"));
    }
}
