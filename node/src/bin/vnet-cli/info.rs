//! `info`: this node's address, version and whether it is online.

use std::io::Write;

use vnet_node::service::api_types::Status;

use crate::Invocation;
use crate::client::Method;
use crate::failure::Failure;
use crate::output::or_dash;

/// `GET /status`, printed as one line.
pub fn run(call: &Invocation, out: &mut dyn Write) -> Result<(), Failure> {
    let answer = call.request(Method::Get, "/status", None)?;
    call.print(out, &answer, format_info)
}

/// `200 info <addr> <version> ONLINE|OFFLINE`
pub fn format_info(status: &Status) -> String {
    let online = if status.online { "ONLINE" } else { "OFFLINE" };
    format!(
        "200 info {} {} {online}\n",
        or_dash(status.address.as_deref()),
        or_dash(status.version.as_deref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(v: serde_json::Value) -> Status {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn info_line() {
        let online = status(
            json!({"address": "8056c2e21c", "version": "0.1.0", "online": true,
            "publicIdentity": "x", "root": false}),
        );
        assert_eq!(format_info(&online), "200 info 8056c2e21c 0.1.0 ONLINE\n");
        let offline = status(json!({"address": "8056c2e21c", "version": "0.1.0", "online": false}));
        assert_eq!(format_info(&offline), "200 info 8056c2e21c 0.1.0 OFFLINE\n");
        assert_eq!(format_info(&status(json!({}))), "200 info - - OFFLINE\n");
    }
}
