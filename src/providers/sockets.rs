//! Listening TCP sockets on this host, read from `/proc/net/tcp` and `/proc/net/tcp6`, with the owning
//! process when `/proc/<pid>/fd` can be read (processes of other users usually cannot, as non-root).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Listener {
    pub port: u16,
    /// `127.0.0.1`, `0.0.0.0`, `::`, …
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
}

const TCP_LISTEN: &str = "0A";

fn decode_address(hex_addr: &str) -> String {
    let bytes = hex::decode(hex_addr).unwrap_or_default();
    match bytes.len() {
        4 => {
            // Little-endian 32-bit word.
            format!("{}.{}.{}.{}", bytes[3], bytes[2], bytes[1], bytes[0])
        }
        16 => {
            // Four little-endian 32-bit words.
            let mut b = [0u8; 16];
            for (w, chunk) in bytes.chunks(4).enumerate() {
                for (i, x) in chunk.iter().rev().enumerate() {
                    b[w * 4 + i] = *x;
                }
            }
            std::net::Ipv6Addr::from(b).to_string()
        }
        _ => hex_addr.to_string(),
    }
}

/// Parses the text of `/proc/net/tcp{,6}`: (port, address, inode) of LISTEN sockets.
pub fn parse_proc_net_tcp(text: &str) -> Vec<(u16, String, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != TCP_LISTEN {
                return None;
            }
            let (addr, port) = cols[1].split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let inode = cols[9].parse().ok()?;
            Some((port, decode_address(addr), inode))
        })
        .collect()
}

/// socket inode → pid, for the processes whose file descriptors we may read.
fn socket_owners(proc_root: &Path) -> HashMap<u64, u32> {
    let mut owners = HashMap::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return owners;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']'))
                    && let Ok(inode) = inode.parse()
                {
                    owners.insert(inode, pid);
                }
            }
        }
    }
    owners
}

/// Every listening TCP port (IPv4 and IPv6), one entry per port (the first address seen).
pub fn listening() -> std::io::Result<Vec<Listener>> {
    let proc_root = Path::new("/proc");
    let mut sockets = Vec::new();
    for f in ["net/tcp", "net/tcp6"] {
        match std::fs::read_to_string(proc_root.join(f)) {
            Ok(text) => sockets.extend(parse_proc_net_tcp(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let owners = socket_owners(proc_root);
    let mut by_port: BTreeMap<u16, Listener> = BTreeMap::new();
    for (port, address, inode) in sockets {
        let pid = owners.get(&inode).copied();
        let command = pid
            .and_then(|p| std::fs::read_to_string(proc_root.join(format!("{p}/comm"))).ok())
            .map(|s| s.trim().to_string());
        let cwd = pid.and_then(|p| std::fs::read_link(proc_root.join(format!("{p}/cwd"))).ok());
        by_port.entry(port).or_insert(Listener {
            port,
            address,
            pid,
            command,
            cwd,
        });
    }
    Ok(by_port.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_sockets_only() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0 100 0 0 10 0\n   1: 0100007F:1F91 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 12346 1 0 100 0 0 10 0\n";
        assert_eq!(
            parse_proc_net_tcp(text),
            vec![(8080, "127.0.0.1".to_string(), 12345)]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0 100 0 0 10 0\n";
        assert_eq!(parse_proc_net_tcp(v6), vec![(3000, "::".to_string(), 999)]);
    }

    #[test]
    fn sees_a_socket_this_process_listens_on() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = listening()
            .unwrap()
            .into_iter()
            .find(|x| x.port == port)
            .expect("our own listener");
        assert_eq!(found.pid, Some(std::process::id()));
    }
}
