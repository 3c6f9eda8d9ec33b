//! The local JSON API of a daemon the load generator measures (a root, a
//! controller), on 127.0.0.1 with the daemon's token.

use anyhow::Context;

/// A daemon's local API (`GET /status`, `GET /peer`, the controller's routes).
pub struct LocalApi {
    base: String,
    token: String,
}

impl LocalApi {
    /// The API of the daemon with home `home` listening on `port`.
    pub fn new(home: &std::path::Path, port: u16) -> anyhow::Result<Self> {
        let path = home.join("authtoken.secret");
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("{}", path.display()))?
            .trim()
            .to_string();
        Ok(Self {
            base: format!("http://127.0.0.1:{port}"),
            token,
        })
    }

    /// `GET path` as JSON.
    pub fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let body = ureq::get(format!("{}{path}", self.base))
            .header("X-VNet-Auth", &self.token)
            .call()
            .context("local API")?
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .context("local API")?;
        serde_json::from_str(&body).context("local API JSON")
    }

    /// Peers the root holds (`tables.peers`).
    pub fn peers(&self) -> anyhow::Result<usize> {
        self.get("/status")?["tables"]["peers"]
            .as_u64()
            .map(|n| n as usize)
            .context("local API: no tables.peers")
    }

    /// Peers with a path the root has heard from (`GET /peer`).
    pub fn peers_heard_from(&self) -> anyhow::Result<usize> {
        let peers = self.get("/peer")?;
        let peers = peers.as_array().context("local API: /peer is no list")?;
        Ok(peers
            .iter()
            .filter(|p| {
                p["paths"]
                    .as_array()
                    .is_some_and(|paths| paths.iter().any(|x| !x["lastReceive"].is_null()))
            })
            .count())
    }

    /// `POST path` with a JSON body; the answer as JSON.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let text = ureq::post(format!("{}{path}", self.base))
            .header("X-VNet-Auth", &self.token)
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .with_context(|| format!("local API POST {path}"))?
            .body_mut()
            .read_to_string()
            .context("local API")?;
        serde_json::from_str(&text).context("local API JSON")
    }

    /// A table's size (`GET /status` `tables`).
    pub fn table(&self, name: &str) -> anyhow::Result<u64> {
        self.get("/status")?["tables"][name]
            .as_u64()
            .with_context(|| format!("local API: no tables.{name}"))
    }
}
