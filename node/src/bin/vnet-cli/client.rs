//! The HTTP client for the node's local API: one request with the token, its
//! answer as JSON, and what went wrong as a [`Failure`].

use std::io;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vnet_node::service::api_types::ErrorAnswer;

use crate::failure::Failure;

/// The header carrying the token (docs/API.md).
const AUTH_HEADER: &str = "X-VNet-Auth";
/// How long to wait for the TCP connection to the node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole request (other than a ping) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP methods the API uses.
#[derive(Clone, Copy, Debug)]
pub enum Method {
    /// Read.
    Get,
    /// Create or change.
    Post,
    /// Remove.
    Delete,
}

/// An HTTP answer, whatever its status.
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

/// No HTTP answer.
#[derive(Debug)]
pub enum Transport {
    /// Connected, but the answer did not come in time.
    Timeout(String),
    /// Could not connect, or the connection broke.
    Failed(String),
}

/// The node's API on 127.0.0.1, with the token.
pub struct Api {
    agent: ureq::Agent,
    /// The API port.
    pub port: u16,
    token: String,
}

impl Api {
    /// A client for the API on `127.0.0.1:port`.
    pub fn new(port: u16, token: String) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The API is on loopback: never go through an HTTP proxy from the environment.
            .proxy(None)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(concat!("vnet-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Api { agent, port, token }
    }

    /// One request; any HTTP status is a `Reply`.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Reply, Transport> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let token = self.token.as_str();
        let result = match (method, body) {
            (Method::Get, _) => self
                .agent
                .get(&url)
                .header(AUTH_HEADER, token)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .call(),
            (Method::Delete, _) => self
                .agent
                .delete(&url)
                .header(AUTH_HEADER, token)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .call(),
            (Method::Post, body) => {
                let request = self
                    .agent
                    .post(&url)
                    .header(AUTH_HEADER, token)
                    .config()
                    .timeout_global(Some(timeout))
                    .build();
                match body {
                    Some(body) => request
                        .header("Content-Type", "application/json")
                        .send(body.to_string().as_str()),
                    None => request.send_empty(),
                }
            }
        };
        let mut response = result.map_err(transport_error)?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(transport_error)?;
        Ok(Reply { status, body })
    }

    /// One request whose answer must be 2xx with a JSON body (or none).
    pub fn call(
        &self,
        command: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let reply = self
            .send(method, path, body, REQUEST_TIMEOUT)
            .map_err(|e| match e {
                Transport::Timeout(reason) | Transport::Failed(reason) => {
                    Failure::unreachable(self.port, &reason)
                }
            })?;
        if !(200..300).contains(&reply.status) {
            return Err(Failure::http(
                reply.status,
                command,
                &error_message(reply.status, &reply.body),
            ));
        }
        parse_answer(command, &reply.body)
    }

    /// A GET whose 404 means "gone meanwhile" (None); other errors fail.
    pub fn get_unless_gone(&self, command: &str, path: &str) -> Result<Option<Value>, Failure> {
        match self.call(command, Method::Get, path, None) {
            Err(Failure::Line(line)) if line.starts_with(&format!("404 {command} ")) => Ok(None),
            other => other.map(Some),
        }
    }
}

/// A JSON request body.
pub fn body(value: impl Serialize) -> Value {
    // Our own bodies are plain structs and maps: they always serialize.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// An answer read as the type the API documents for it.
pub fn read<T: DeserializeOwned>(command: &str, answer: &Value) -> Result<T, Failure> {
    T::deserialize(answer).map_err(|e| {
        Failure::local(format_args!(
            "{command}: vnet-node sent an answer this vnet-cli cannot read: {e}"
        ))
    })
}

fn transport_error(e: ureq::Error) -> Transport {
    use ureq::Timeout as T;
    match e {
        ureq::Error::Timeout(T::Connect | T::Resolve) => Transport::Failed(format!(
            "no connection within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
        ureq::Error::Timeout(_) => Transport::Timeout("timed out waiting for the answer".into()),
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
            Transport::Timeout(format!("timed out waiting for the answer: {e}"))
        }
        ureq::Error::Io(e) => Transport::Failed(e.to_string()),
        other => Transport::Failed(other.to_string()),
    }
}

/// A 2xx body as JSON; an empty body is `null`.
pub fn parse_answer(command: &str, body: &str) -> Result<Value, Failure> {
    if body.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(body).map_err(|e| {
        Failure::local(format_args!(
            "{command}: vnet-node sent an answer that is not JSON: {e}"
        ))
    })
}

/// The message of an error answer: its JSON `error`, else its text, else
/// the status's reason phrase.
pub fn error_message(status: u16, body: &str) -> String {
    if let Ok(value) = serde_json::from_str::<Value>(body)
        && value.is_object()
        && let Ok(answer) = ErrorAnswer::deserialize(&value)
    {
        return crate::output::one_line(&answer.error);
    }
    let text = crate::output::one_line(body);
    if !text.is_empty() {
        return text;
    }
    match status {
        400 => "bad request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        405 => "method not allowed",
        500 => "internal server error",
        503 => "service unavailable",
        504 => "timeout",
        _ => "error",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages() {
        assert_eq!(error_message(401, r#"{"error": "bad token"}"#), "bad token");
        assert_eq!(error_message(404, "no such\npeer "), "no such peer");
        assert_eq!(error_message(404, ""), "not found");
        assert_eq!(error_message(418, r#"{"nope": 1}"#), r#"{"nope": 1}"#);
        assert_eq!(error_message(400, r#"{"error": 5}"#), r#"{"error": 5}"#);
        assert_eq!(error_message(400, r#"["x"]"#), r#"["x"]"#);
    }
}
