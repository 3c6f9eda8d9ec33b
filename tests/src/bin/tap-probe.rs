//! Test tool: creates a network's TAP device, configures it over netlink as
//! vnet-node does, prints `READY <device> <mac>`, then one line per frame it
//! reads (`FRAME <length> <ethertype hex>`) until killed.
//!
//!     tap-probe <network id> <member address> <ip/prefix> <mtu>

use std::process::ExitCode;

use vnet_node::core::address::Address;
use vnet_node::core::network_id::{Mac, NetworkId};
use vnet_node::service::netlink::{LinkSettings, Netlink};
use vnet_node::service::tap::{TapDevice, device_name};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: tap-probe <network id> <member address> <ip/prefix> <mtu>");
        return ExitCode::from(2);
    }
    let parsed = (|| -> Option<(NetworkId, Address, std::net::IpAddr, u8, u32)> {
        let (ip, prefix) = args[3].split_once('/')?;
        Some((
            args[1].parse().ok()?,
            args[2].parse().ok()?,
            ip.parse().ok()?,
            prefix.parse().ok()?,
            args[4].parse().ok()?,
        ))
    })();
    let Some((nwid, member, ip, prefix, mtu)) = parsed else {
        eprintln!("tap-probe: bad arguments");
        return ExitCode::from(2);
    };
    let tap = match TapDevice::create(&device_name(nwid), false) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tap-probe: cannot create TAP: {e}");
            return ExitCode::from(1);
        }
    };
    let mac = Mac::for_member(member, nwid);
    let settings = LinkSettings {
        device: tap.name().to_string(),
        mac,
        mtu,
        addresses: vec![(ip, prefix)],
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let applied = runtime.block_on(async {
        let netlink = Netlink::connect()?;
        netlink.apply(&settings, &[]).await?;
        // Applying twice changes nothing (addresses are synced, not appended).
        netlink.apply(&settings, &[]).await
    });
    if let Err(e) = applied {
        eprintln!("tap-probe: {e}");
        return ExitCode::from(1);
    }
    println!("READY {} {mac}", tap.name());
    let mut buf = vec![0u8; 65536];
    loop {
        match tap.read(&mut buf) {
            Ok(n) if n >= 14 => {
                println!("FRAME {n} {:02x}{:02x}", buf[12], buf[13]);
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("tap-probe: read: {e}");
                return ExitCode::from(1);
            }
        }
    }
}
