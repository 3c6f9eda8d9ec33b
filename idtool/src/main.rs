//! `vnet-idtool`: make and check identities, signatures and moons, with
//! zerotier-idtool's commands, messages and exit statuses.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use vnet_node::core::c25519::{PublicKey, Signature};
use vnet_node::core::constants::{C25519_PUBLIC_KEY_LEN_BYTES, C25519_SIGNATURE_LEN_BYTES};
use vnet_node::core::identity::{Identity, IdentityError};
use vnet_node::core::world_spec::{WorldJson, describe_world, to_zerotier_json};
use vnet_node::service::atomic_file::{PUBLIC_FILE_MODE, SECRET_FILE_MODE, write_atomic};
use vnet_node::service::identity_file::{
    IdentityArgError, existing_world, is_identity_literal, now_ms, read_identity_arg,
    read_world_file, write_world_file,
};

/// vnet identity and world tool.
#[derive(Parser)]
#[command(name = "vnet-idtool", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an identity; print it, or write the secret and public files.
    Generate {
        /// Where to write the secret identity (mode 0600).
        secret: Option<PathBuf>,
        /// Where to write the public identity.
        public: Option<PathBuf>,
        /// Hex prefix the address must start with (each digit costs 16x the time).
        vanity: Option<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Check that an identity's address matches its key (and its secret key, if any).
    Validate {
        /// Identity literal or file.
        identity: String,
    },
    /// Print the public identity of a secret identity.
    Getpublic {
        /// Identity literal or file.
        identity: String,
    },
    /// Sign a file; print the signature in hex.
    Sign {
        /// Secret identity literal or file.
        identity: String,
        /// File to sign.
        file: PathBuf,
    },
    /// Verify a signature of a file.
    Verify {
        /// Identity literal or file.
        identity: String,
        /// Signed file.
        file: PathBuf,
        /// Signature in hex, or a file holding it.
        signature: String,
    },
    /// Start a moon: print its JSON with a new signing key.
    Initmoon {
        /// The seed root's public identity (literal or file).
        identity: String,
    },
    /// Sign a moon JSON and write 000000<id>.moon.
    Genmoon {
        /// The moon JSON (from initmoon, with stableEndpoints filled in).
        json: PathBuf,
        /// Directory to write the .moon file in.
        #[arg(short = 'o', long, default_value = ".")]
        out_dir: PathBuf,
        /// Write even if nodes holding the existing file would refuse the new one.
        #[arg(long)]
        force: bool,
    },
    /// Print a planet or moon file as JSON; exit non-zero unless it is valid and its signature verifies.
    Showworld {
        /// The world file.
        file: PathBuf,
        /// Verify with this key instead of the world's own updatesMustBeSignedBy
        /// (a previous world file, a public identity, or 128 hex digits): the key
        /// of the world it updates, after a signing-key rotation.
        #[arg(long)]
        signed_by: Option<String>,
    },
}

/// A refusal: printed to stderr, exit status 1 (as zerotier-idtool).
struct Refusal(String);

impl<E: std::fmt::Display> From<E> for Refusal {
    fn from(e: E) -> Self {
        Refusal(e.to_string())
    }
}

type Outcome = Result<(), Refusal>;

fn main() -> ExitCode {
    if let Some(code) = vnet_node::generated_docs::write_if_asked(Cli::command()) {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit 2, as every vnet binary's (zerotier-idtool
            // says 1; a refused file or identity still exits 1 here too).
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Refusal(message)) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> Outcome {
    match command {
        Command::Generate {
            secret,
            public,
            vanity,
            force,
        } => generate(secret, public, vanity, force),
        Command::Validate { identity } => validate(&identity),
        Command::Getpublic { identity } => {
            let id = identity_arg(&identity)?;
            print_flush(&id.to_text(false));
            Ok(())
        }
        Command::Sign { identity, file } => sign(&identity, &file),
        Command::Verify {
            identity,
            file,
            signature,
        } => verify(&identity, &file, &signature),
        Command::Initmoon { identity } => {
            let id = read_identity_arg(&identity)
                .map_err(|e| format!("{identity} is not a valid identity: {}", reason(&e)))?;
            println!(
                "{}",
                WorldJson::new_moon(&id.to_public(), &mut vnet_node::service::os_rng()).to_json()
            );
            Ok(())
        }
        Command::Genmoon {
            json,
            out_dir,
            force,
        } => genmoon(&json, &out_dir, force),
        Command::Showworld { file, signed_by } => showworld(&file, signed_by.as_deref()),
    }
}

fn print_flush(text: &str) {
    let mut out = std::io::stdout();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn reason(e: &IdentityArgError) -> String {
    match e {
        IdentityArgError::Unreadable { error, .. } => format!("cannot read: {error}"),
        IdentityArgError::Invalid { error, .. } => error.to_string(),
    }
}

/// zerotier-idtool's message for an unusable identity argument, with the reason added.
fn identity_arg(arg: &str) -> Result<Identity, Refusal> {
    read_identity_arg(arg).map_err(|e| {
        Refusal(format!(
            "Identity argument invalid or file unreadable: {arg}: {}",
            reason(&e)
        ))
    })
}

fn generate(
    secret: Option<PathBuf>,
    public: Option<PathBuf>,
    vanity: Option<String>,
    force: bool,
) -> Outcome {
    for path in [&secret, &public].into_iter().flatten() {
        if path.exists() && !force {
            return Err(Refusal(format!(
                "{}: already exists; refusing to overwrite an identity (use --force)",
                path.display()
            )));
        }
    }
    let (prefix, bits) = match &vanity {
        Some(v) => {
            if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Refusal(format!(
                    "vanity prefix {v:?} must be 1 to 10 hex digits"
                )));
            }
            (u64::from_str_radix(v, 16).expect("hex"), 4 * v.len() as u32)
        }
        None => (0, 0),
    };
    let id = loop {
        let id = Identity::generate(&mut vnet_node::service::os_rng());
        if bits == 0 || id.address().to_u64() >> (40 - bits) == prefix {
            if bits > 0 {
                eprintln!("vanity address: found {} !", id.address());
            }
            break id;
        }
    };
    let Some(secret) = secret else {
        print_flush(&id.to_text(true));
        return Ok(());
    };
    write_atomic(&secret, id.to_text(true).as_bytes(), SECRET_FILE_MODE)
        .map_err(|e| format!("Error writing to {}: {e}", secret.display()))?;
    println!("{} written", secret.display());
    if let Some(public) = public {
        write_atomic(&public, id.to_text(false).as_bytes(), PUBLIC_FILE_MODE)
            .map_err(|e| format!("Error writing to {}: {e}", public.display()))?;
        println!("{} written", public.display());
    }
    Ok(())
}

fn validate(arg: &str) -> Outcome {
    match read_identity_arg(arg) {
        Ok(_) => {
            println!("{arg} is a valid identity");
            Ok(())
        }
        Err(IdentityArgError::Invalid {
            error:
                error @ (IdentityError::AddressMismatch { .. }
                | IdentityError::InsufficientWork
                | IdentityError::SecretDoesNotMatchPublic),
            ..
        }) => Err(Refusal(format!("{arg} FAILED validation: {error}"))),
        Err(e) => Err(Refusal(format!(
            "Identity argument invalid or file unreadable: {arg}: {}",
            reason(&e)
        ))),
    }
}

fn sign(arg: &str, file: &Path) -> Outcome {
    let id = read_identity_arg(arg)
        .map_err(|e| format!("{arg} is not a valid identity: {}", reason(&e)))?;
    if !id.has_secret() {
        return Err(Refusal(format!(
            "{arg} does not contain a private key (must use private to sign)"
        )));
    }
    let message = fs::read(file).map_err(|e| format!("{} is not readable: {e}", file.display()))?;
    let signature = id.sign(&message).expect("secret present");
    print_flush(&hex::encode(signature.as_bytes()));
    Ok(())
}

fn verify(arg: &str, file: &Path, signature_arg: &str) -> Outcome {
    let id = read_identity_arg(arg)
        .map_err(|e| format!("{arg} is not a valid identity: {}", reason(&e)))?;
    let message = fs::read(file).map_err(|e| format!("{} is not readable: {e}", file.display()))?;
    let failed = |why: String| Refusal(format!("{} signature check FAILED: {why}", file.display()));
    // As zerotier-idtool: the signature is hex on the command line, or a file holding it.
    let hex_text = if hex::decode(signature_arg.trim()).is_ok() {
        signature_arg.trim().to_string()
    } else {
        fs::read_to_string(signature_arg)
            .map_err(|e| failed(format!("signature is neither hex nor a readable file: {e}")))?
            .trim()
            .to_string()
    };
    let bytes = hex::decode(&hex_text).map_err(|e| failed(format!("signature is not hex: {e}")))?;
    let bytes: [u8; C25519_SIGNATURE_LEN_BYTES] = bytes.try_into().map_err(|b: Vec<u8>| {
        failed(format!(
            "signature must be {C25519_SIGNATURE_LEN_BYTES} bytes, got {}",
            b.len()
        ))
    })?;
    if !id.verify(&message, &Signature::from_bytes(bytes)) {
        return Err(failed(
            "signature does not match this identity and file".into(),
        ));
    }
    println!("{} signature valid", file.display());
    Ok(())
}

fn genmoon(json_path: &Path, out_dir: &Path, force: bool) -> Outcome {
    let name = json_path.display();
    let text = fs::read_to_string(json_path).map_err(|e| format!("E: cannot read {name}: {e}"))?;
    let json = WorldJson::from_json(&text).map_err(|e| format!("E: {name}: {e}"))?;
    let spec = json.to_spec().map_err(|e| match e {
        vnet_node::core::world_spec::WorldSpecError::Field { field, problem } if field == "id" => {
            format!("E: ID in {name} is invalid: {problem}")
        }
        e => format!("E: {name}: {e}"),
    })?;
    let file_name = format!("{:016x}.moon", spec.id);
    let out = out_dir.join(&file_name);
    // A world must be newer than the one it replaces: never go back in time,
    // even with a clock that did.
    let mut timestamp = now_ms();
    if let Some(old) = existing_world(&out)
        && old.id() == spec.id
        && old.timestamp_ms() >= timestamp
    {
        timestamp = old.timestamp_ms() + 1;
    }
    let world = spec
        .sign(timestamp)
        .map_err(|e| format!("E: {name}: {e}"))?;
    write_world_file(&out, &world, force).map_err(|e| format!("E: {e}"))?;
    let shown = if out_dir == Path::new(".") {
        file_name
    } else {
        out.display().to_string()
    };
    println!("wrote {shown} (signed world with timestamp {timestamp})");
    Ok(())
}

fn showworld(file: &Path, signed_by: Option<&str>) -> Outcome {
    let world = read_world_file(file).map_err(|e| format!("E: {e}"))?;
    let key = match signed_by {
        None => *world.updates_must_be_signed_by(),
        Some(arg) => signing_key_arg(arg)?,
    };
    let description = describe_world(&world, &key);
    println!("{}", to_zerotier_json(&description));
    if !world.is_signed_by(&key) {
        return Err(Refusal(format!(
            "E: {}: signature does not verify with {}",
            file.display(),
            if signed_by.is_some() {
                "the given key"
            } else {
                "the world's updatesMustBeSignedBy key"
            }
        )));
    }
    Ok(())
}

/// A key to verify a world with: 128 hex digits, a public identity, or a world file.
fn signing_key_arg(arg: &str) -> Result<PublicKey, Refusal> {
    if let Ok(bytes) = hex::decode(arg)
        && let Ok(bytes) = <[u8; C25519_PUBLIC_KEY_LEN_BYTES]>::try_from(bytes)
    {
        return Ok(PublicKey::from_bytes(bytes));
    }
    if is_identity_literal(arg) {
        return Ok(*identity_arg(arg)?.public_key());
    }
    let path = Path::new(arg);
    if let Ok(world) = read_world_file(path) {
        return Ok(*world.updates_must_be_signed_by());
    }
    match read_identity_arg(arg) {
        Ok(id) => Ok(*id.public_key()),
        Err(e) => Err(Refusal(format!(
            "E: --signed-by {arg}: neither a 128-hex-digit key, a world file, nor an identity ({})",
            reason(&e)
        ))),
    }
}
