//! The rules by which a held world accepts an update (how root sets rotate).

use std::net::SocketAddr;
use std::sync::OnceLock;

use vnet_proto::c25519::KeyPair;
use vnet_proto::identity::Identity;
use vnet_proto::world::{Root, UpdateRefusal, World, WorldKind};

fn roots() -> Vec<Root> {
    static IDS: OnceLock<Vec<Identity>> = OnceLock::new();
    let ids = IDS.get_or_init(|| (0..2).map(|_| Identity::generate(&mut os_rng())).collect());
    ids.iter()
        .enumerate()
        .map(|(i, id)| Root {
            identity: id.clone(),
            endpoints: vec![SocketAddr::from(([10, 0, 0, i as u8 + 1], 9993))],
        })
        .collect()
}

fn world(kind: WorldKind, id: u64, ts: u64, next: &KeyPair, signer: &KeyPair) -> World {
    World::make(kind, id, ts, *next.public(), roots(), signer).unwrap()
}

#[test]
fn newer_world_signed_by_the_named_key_replaces_the_held_one() {
    let key = KeyPair::generate(&mut os_rng());
    let held = world(WorldKind::Planet, 7, 100, &key, &key);
    let update = world(WorldKind::Planet, 7, 101, &key, &key);
    assert_eq!(held.check_update(&update), Ok(()));
    // And the roots published never carry secrets.
    assert!(
        World::decode(&update.encode())
            .unwrap()
            .roots()
            .iter()
            .all(|r| !r.identity.has_secret())
    );
}

#[test]
fn updates_that_are_not_newer_or_not_the_same_world_are_refused() {
    let key = KeyPair::generate(&mut os_rng());
    let held = world(WorldKind::Moon, 7, 100, &key, &key);
    for ts in [99, 100] {
        assert_eq!(
            held.check_update(&world(WorldKind::Moon, 7, ts, &key, &key)),
            Err(UpdateRefusal::NotNewer {
                held: 100,
                offered: ts
            })
        );
    }
    assert_eq!(
        held.check_update(&world(WorldKind::Moon, 8, 101, &key, &key)),
        Err(UpdateRefusal::DifferentId {
            held: 7,
            offered: 8
        })
    );
    assert_eq!(
        held.check_update(&world(WorldKind::Planet, 7, 101, &key, &key)),
        Err(UpdateRefusal::DifferentKind {
            held: "moon",
            offered: "planet"
        })
    );
}

#[test]
fn updates_signed_by_another_key_are_refused() {
    let key = KeyPair::generate(&mut os_rng());
    let intruder = KeyPair::generate(&mut os_rng());
    let held = world(WorldKind::Planet, 7, 100, &key, &key);
    // Even naming the held key as its own successor key does not help.
    let forged = world(WorldKind::Planet, 7, 101, &key, &intruder);
    assert_eq!(held.check_update(&forged), Err(UpdateRefusal::BadSignature));
}

#[test]
fn signing_key_rotation_takes_two_steps() {
    let old = KeyPair::generate(&mut os_rng());
    let new = KeyPair::generate(&mut os_rng());
    // v1 is signed by the old key and names the new one for updates.
    let v1 = world(WorldKind::Planet, 7, 100, &new, &old);
    assert!(!v1.is_self_signed());
    assert!(v1.is_signed_by(old.public()));
    let v2 = world(WorldKind::Planet, 7, 101, &new, &new);
    assert_eq!(v1.check_update(&v2), Ok(()));
    // The retired key can no longer sign updates.
    let v3_old = world(WorldKind::Planet, 7, 102, &new, &old);
    assert_eq!(v2.check_update(&v3_old), Err(UpdateRefusal::BadSignature));
}

#[test]
fn decode_update_checks_bytes_from_a_peer_cheaply_first() {
    use vnet_proto::identity_hash::IdentityHashScratch;
    use vnet_proto::world::WorldUpdateError;
    let key = KeyPair::generate(&mut os_rng());
    let intruder = KeyPair::generate(&mut os_rng());
    let held = world(WorldKind::Moon, 7, 100, &key, &key);
    let mut scratch = IdentityHashScratch::new();
    let update = world(WorldKind::Moon, 7, 101, &key, &key);
    assert_eq!(
        held.decode_update(&update.encode(), &mut scratch),
        Ok(update)
    );
    let forged = world(WorldKind::Moon, 7, 101, &key, &intruder);
    assert_eq!(
        held.decode_update(&forged.encode(), &mut scratch),
        Err(WorldUpdateError::Refused(UpdateRefusal::BadSignature))
    );
    let old = world(WorldKind::Moon, 7, 99, &key, &key);
    assert!(matches!(
        held.decode_update(&old.encode(), &mut scratch),
        Err(WorldUpdateError::Refused(UpdateRefusal::NotNewer { .. }))
    ));
    assert!(matches!(
        held.decode_update(&[127, 0, 0], &mut scratch),
        Err(WorldUpdateError::Malformed(_))
    ));
}

/// The operating system's random source.
fn os_rng() -> vnet_proto::rng::UnwrapErr<getrandom::SysRng> {
    vnet_proto::rng::UnwrapErr(getrandom::SysRng)
}
