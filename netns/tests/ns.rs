//! Fresh network namespaces.

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

fn netns_id() -> std::path::PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap()
}

#[test]
fn run_in_new_gives_a_private_namespace_with_loopback_up() {
    let outer = netns_id();
    let (inner, links) = cryo_netns::run_in_new(|| {
        let links: Vec<(String, bool)> = getifaddrs()
            .unwrap()
            .map(|a| (a.interface_name, a.flags.contains(InterfaceFlags::IFF_UP)))
            .collect();
        // a loopback socket works at once
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (netns_id(), links)
    })
    .unwrap();
    assert_ne!(inner, outer);
    assert_eq!(netns_id(), outer, "the caller's thread moved");
    assert!(links.iter().all(|(name, _)| name == "lo"), "{links:?}");
    assert!(links.iter().any(|(_, up)| *up), "lo is down: {links:?}");
}

#[test]
fn a_panic_in_the_namespace_reaches_the_caller() {
    let r = std::panic::catch_unwind(|| cryo_netns::run_in_new(|| panic!("inside")));
    assert!(r.is_err());
}
