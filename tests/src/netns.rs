//! Network faults between test nodes, with Linux network namespaces (needs root and `ip`).
//!
//! [`Net::create`] makes a bridge in the test's namespace and one namespace per node, joined
//! to the bridge by a veth pair; node `id` has the address `198.18.<s>.<id>` (RFC 2544's
//! benchmarking range, which no real network uses), the test itself `198.18.<s>.254`. Every
//! node runs in its own namespace, so all of them use the same ports.
//!
//! A cut from `a` to `b` drops, silently, every packet `a` sends to `b`: in `a`'s namespace
//! the route to `b` goes through a gateway whose neighbour entry is a MAC address nobody has,
//! so the frames leave and vanish. Connections time out as on a real partition instead of
//! failing at once (a blackhole route would refuse immediately), and one direction can be cut
//! alone. [`Net::heal`] removes every cut.
//!
//! Names carry a tag made of the test process's id and a counter; [`Net::create`] first
//! removes namespaces and bridges left by test processes that no longer run, and `Drop`
//! removes this one's.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// The namespaces and bridge of one test cluster.
pub struct Net {
    tag: String,
    subnet: (u8, u8),
    ids: Vec<u32>,
    cuts: Mutex<BTreeSet<(u32, u32)>>,
}

/// The address that leads nowhere: cut routes go through it.
const VOID_GATEWAY: u8 = 253;
/// The test's own address on the bridge.
const HOST: u8 = 254;

/// Runs `ip` with `args`; panics with its output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the ip command (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Like [`ip`], ignoring failure (cleanup of what may not exist).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and bridges of test processes that are gone.
fn sweep_stale() {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    for line in text.unwrap_or_default().lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = tag_pid(name.strip_prefix("kn").unwrap_or_default()) else {
            continue;
        };
        if !process_alive(pid) {
            ip_quiet(&["netns", "del", name]);
        }
    }
    let out = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    for line in text.unwrap_or_default().lines() {
        let name = line.split(": ").nth(1).unwrap_or_default();
        if let Some(pid) = tag_pid(name.strip_prefix("kb").unwrap_or_default()) {
            if !process_alive(pid) {
                ip_quiet(&["link", "del", name]);
            }
        }
    }
}

/// The process id in a tag `<pid>x<counter>` (followed by `-<id>` in namespace names).
fn tag_pid(tag: &str) -> Option<u32> {
    tag.split('x').next()?.parse().ok()
}

impl Net {
    /// Makes the bridge and a namespace for each of `ids`.
    pub fn create(ids: &[u32]) -> Net {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        sweep_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{}x{n}", pid % 100_000);
        let slot = (pid.wrapping_mul(7) + n) % 512;
        let subnet = (18 + (slot / 256) as u8, (slot % 256) as u8);
        let net = Net {
            tag,
            subnet,
            ids: ids.to_vec(),
            cuts: Mutex::new(BTreeSet::new()),
        };
        net.build();
        net
    }

    fn bridge(&self) -> String {
        format!("kb{}", self.tag)
    }

    /// The namespace of node `id`.
    pub fn ns(&self, id: u32) -> String {
        format!("kn{}-{id}", self.tag)
    }

    fn addr(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, self.subnet.0, self.subnet.1, last)
    }

    /// Node `id`'s address.
    pub fn node_ip(&self, id: u32) -> Ipv4Addr {
        self.addr(id as u8)
    }

    fn build(&self) {
        let bridge = self.bridge();
        let host = format!("{}/24", self.addr(HOST));
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &host, "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for id in &self.ids {
            self.add_node(*id);
        }
    }

    fn add_node(&self, id: u32) {
        let ns = self.ns(id);
        let veth = format!("kv{}-{id}", self.tag);
        let addr = format!("{}/24", self.node_ip(id));
        let void = self.addr(VOID_GATEWAY).to_string();
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["link", "set", &veth, "master", &self.bridge(), "up"]);
        ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns,
            "neigh",
            "replace",
            &void,
            "lladdr",
            "02:00:00:00:de:ad",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
    }

    /// Drops every packet `from` sends to `to` (one direction).
    pub fn cut(&self, from: u32, to: u32) {
        let mut cuts = self.cuts.lock().unwrap();
        if !cuts.insert((from, to)) {
            return;
        }
        let dest = format!("{}/32", self.node_ip(to));
        let via = self.addr(VOID_GATEWAY).to_string();
        ip(&[
            "-n",
            &self.ns(from),
            "route",
            "replace",
            &dest,
            "via",
            &via,
            "dev",
            "eth0",
        ]);
    }

    /// Cuts `a` and `b` apart in both directions.
    pub fn cut_both(&self, a: u32, b: u32) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Cuts every node of `side` from every node not in it, both ways. Clients (the test's
    /// own address) still reach every node.
    pub fn partition(&self, side: &[u32]) {
        for a in side {
            for b in self.ids.iter().filter(|b| !side.contains(b)) {
                self.cut_both(*a, *b);
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&self) {
        let cuts: Vec<(u32, u32)> = std::mem::take(&mut *self.cuts.lock().unwrap())
            .into_iter()
            .collect();
        for (from, to) in cuts {
            let dest = format!("{}/32", self.node_ip(to));
            ip(&["-n", &self.ns(from), "route", "del", &dest]);
        }
    }

    /// The cuts in place, as (from, to) pairs.
    pub fn cuts(&self) -> Vec<(u32, u32)> {
        self.cuts.lock().unwrap().iter().copied().collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for id in &self.ids {
            ip_quiet(&["netns", "del", &self.ns(*id)]);
        }
        ip_quiet(&["link", "del", &self.bridge()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    /// Connects from namespace `ns` to `to` (a Python one-liner run inside it): whether a
    /// byte came back within a second.
    fn reachable_from(net: &Net, from: u32, to: SocketAddr) -> bool {
        let script = format!(
            "import socket\ns=socket.create_connection(('{}',{}),timeout=1)\ns.sendall(b'x')\nprint(s.recv(1))",
            to.ip(),
            to.port()
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &net.ns(from), "python3", "-c", &script])
            .output()
            .unwrap();
        out.status.success()
    }

    /// An echo server inside node `id`'s namespace on port 7000.
    fn echo_in(net: &Net, id: u32) -> std::process::Child {
        let script = format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{}',7000))\ns.listen()\nwhile True:\n c,_=s.accept()\n c.sendall(c.recv(1))\n c.close()",
            net.node_ip(id)
        );
        Command::new("ip")
            .args(["netns", "exec", &net.ns(id), "python3", "-c", &script])
            .spawn()
            .unwrap()
    }

    #[test]
    fn cuts_drop_one_direction_and_heal_restores_it() {
        let net = Net::create(&[1, 2]);
        let mut server = echo_in(&net, 2);
        let to2 = SocketAddr::from((net.node_ip(2), 7000));
        let up = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            TcpStream::connect_timeout(&to2, Duration::from_secs(1)).is_ok()
        });
        assert!(up, "the test reaches node 2");
        assert!(reachable_from(&net, 1, to2));
        net.cut(1, 2);
        assert!(!reachable_from(&net, 1, to2), "1 → 2 is cut");
        // The test's own address is not cut.
        let mut s = TcpStream::connect_timeout(&to2, Duration::from_secs(1)).unwrap();
        s.write_all(b"y").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"y");
        net.heal();
        assert!(reachable_from(&net, 1, to2), "healed");
        server.kill().unwrap();
        server.wait().unwrap();
    }
}
