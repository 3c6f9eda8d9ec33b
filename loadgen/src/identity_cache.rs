//! Identities for simulated nodes: generation is slow by design (a
//! memory-hard hash per try, about 0.2 s an identity here), so they are made
//! once, on every core, and kept in a file (one secret identity per line)
//! that later runs read back and extend.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use vnet_node::core::c25519::{PublicKey, SecretKey};
use vnet_node::core::constants::{C25519_PUBLIC_KEY_LEN_BYTES, C25519_SECRET_KEY_LEN_BYTES};
use vnet_node::core::identity::{Identity, decode_hex};
use vnet_node::core::rng::{NodeRng, SeedableRng};

/// At least `n` identities from `path` (made and appended as needed).
pub fn load_or_make(path: &Path, n: usize) -> anyhow::Result<Vec<Identity>> {
    let mut have = Vec::new();
    if let Ok(text) = fs::read_to_string(path) {
        for (i, line) in text.lines().enumerate().take(n) {
            let identity =
                parse_own(line).with_context(|| format!("{}: line {}", path.display(), i + 1))?;
            have.push(identity);
        }
    }
    if have.len() >= n {
        return Ok(have);
    }
    let missing = n - have.len();
    eprintln!(
        "making {missing} identities (cached in {}; this takes a while once)",
        path.display()
    );
    let made = make(missing)?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| path.display().to_string())?;
    for identity in &made {
        writeln!(file, "{}", identity.to_text(true)).with_context(|| path.display().to_string())?;
    }
    have.extend(made);
    Ok(have)
}

/// Reads back a line this tool wrote (`address:0:public:secret`), without
/// the memory-hard hash: the file is our own record, and the secret key
/// must still match the public one.
fn parse_own(line: &str) -> anyhow::Result<Identity> {
    let fields: Vec<&str> = line.trim().split(':').collect();
    let [address, "0", public, secret] = fields[..] else {
        anyhow::bail!("expected address:0:public:secret");
    };
    let public = decode_hex::<C25519_PUBLIC_KEY_LEN_BYTES>(public, "public key")?;
    let secret = decode_hex::<C25519_SECRET_KEY_LEN_BYTES>(secret, "secret key")?;
    Ok(
        Identity::previously_verified(address.parse()?, PublicKey::from_bytes(public))
            .with_secret(SecretKey::from_bytes(secret))?,
    )
}

/// Makes `n` identities on every core.
fn make(n: usize) -> anyhow::Result<Vec<Identity>> {
    let threads = std::thread::available_parallelism().map_or(1, |c| c.get());
    let next = AtomicUsize::new(0);
    let made: Vec<Vec<Identity>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<Vec<Identity>> {
                    let mut seed = [0u8; 32];
                    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("random seed: {e}"))?;
                    let mut rng = NodeRng::from_seed(seed);
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(mine);
                        }
                        mine.push(Identity::generate(&mut rng));
                        if (i + 1).is_multiple_of(500) {
                            eprintln!("  {} of {n}", i + 1);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("identity thread"))
            .collect::<anyhow::Result<_>>()
    })?;
    Ok(made.into_iter().flatten().collect())
}
