//! What a member's own config request tells the controller about it: its
//! verified identity (pinned at first contact), its versions, the routes it
//! advertises, and a join key. The node core verified the identity when
//! the member's session was set up; the controller only compares it.

use vnet_node::core::message::Versions;
use vnet_node::core::node::MemberAsked;

use crate::ip::Cidr;
use crate::model::Member;

/// A member's report, from one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberReport {
    /// Its public identity, as text.
    pub identity: String,
    /// Its versions, when its HELLO told them.
    pub versions: Option<Versions>,
    /// The routes it advertises.
    pub advertised_routes: Vec<Cidr>,
    /// The join key it presents, if any.
    pub join_key: Option<String>,
}

impl MemberReport {
    /// The report of one request.
    pub fn from_asked(asked: &MemberAsked) -> Self {
        Self {
            identity: asked.identity.to_text(false),
            versions: asked.versions,
            advertised_routes: asked.meta.advertise_routes.clone(),
            join_key: asked.meta.join_key.clone(),
        }
    }

    /// Whether `member` may be the one reporting: no identity pinned yet,
    /// or this one.
    pub fn matches(&self, member: &Member) -> bool {
        member.identity.as_ref().is_none_or(|p| *p == self.identity)
    }

    /// Takes what it told into `member`: its identity pinned if none was,
    /// its versions and advertised routes as they are now.
    pub fn apply_to(&self, member: &mut Member) {
        if member.identity.is_none() {
            member.identity = Some(self.identity.clone());
        }
        if self.versions.is_some() {
            member.versions = self.versions;
        }
        member.advertised_routes.clone_from(&self.advertised_routes);
    }
}

#[cfg(test)]
mod tests {
    use vnet_node::core::SharedIdentity;

    use vnet_node::core::Identity;
    use vnet_node::core::network_message::RequestMeta;

    use super::*;

    #[test]
    fn a_report_pins_the_first_identity_and_refuses_another() {
        use vnet_node::core::rng::{NodeRng, SeedableRng};
        let mut rng = NodeRng::seed_from_u64(1);
        let a = Identity::generate(&mut rng);
        let b = Identity::generate(&mut rng);
        let report = |id: &Identity| {
            MemberReport::from_asked(&MemberAsked {
                identity: SharedIdentity::new(id.to_public()),
                versions: None,
                meta: RequestMeta {
                    join_key: None,
                    advertise_routes: vec!["192.168.31.0/24".parse().unwrap()],
                },
            })
        };
        let mut m = Member::new("8056c2e21c000001".parse().unwrap(), a.address(), 0);
        let first = report(&a);
        assert!(first.matches(&m));
        first.apply_to(&mut m);
        assert_eq!(m.identity.as_deref(), Some(a.to_text(false).as_str()));
        assert_eq!(m.advertised_routes, first.advertised_routes);
        // Another key for this address (as if the address were forged).
        let mut forged = report(&b);
        forged.identity =
            forged
                .identity
                .replacen(&b.address().to_string(), &a.address().to_string(), 1);
        assert!(!forged.matches(&m));
        assert!(report(&a).matches(&m));
    }
}
