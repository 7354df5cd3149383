//! KMS plugin endpoints: `unix:///path/to/socket`, or `unix:///@name` for a Linux abstract
//! socket (upstream drops the leading `/` of a path that starts with `/@`).

use std::fmt;
use std::os::linux::net::SocketAddrExt;
use std::path::PathBuf;

/// An endpoint that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("KMS endpoint {endpoint:?}: {reason}")]
pub struct EndpointError {
    pub endpoint: String,
    pub reason: String,
}

/// Where a plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket (the name without the leading `@`).
    Abstract(String),
}

impl Endpoint {
    /// Parses `unix:///path` or `unix:///@name` (upstream accepts only the `unix` scheme).
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let fail = |reason: &str| EndpointError {
            endpoint: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url.strip_prefix("unix://").ok_or_else(|| {
            fail("only unix sockets are supported (unix:///path/to/socket or unix:///@abstract-name)")
        })?;
        // `unix://host/path` has an authority; upstream uses only the URL path.
        let path = match rest.find('/') {
            Some(i) => &rest[i..],
            None => "",
        };
        if let Some(name) = path.strip_prefix("/@") {
            if name.is_empty() {
                return Err(fail("the abstract socket name is empty"));
            }
            return Ok(Endpoint::Abstract(name.to_string()));
        }
        if path.is_empty() || path == "/" {
            return Err(fail("the socket path is empty"));
        }
        Ok(Endpoint::Path(PathBuf::from(path)))
    }

    fn socket_addr(&self) -> std::io::Result<std::os::unix::net::SocketAddr> {
        match self {
            Endpoint::Path(p) => std::os::unix::net::SocketAddr::from_pathname(p),
            Endpoint::Abstract(name) => {
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            }
        }
    }

    /// Connects (a unix socket connect does not block on the peer).
    pub fn connect(&self) -> std::io::Result<tokio::net::UnixStream> {
        let stream = std::os::unix::net::UnixStream::connect_addr(&self.socket_addr()?)?;
        stream.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(stream)
    }

    /// Listens. A socket file left by a previous run is replaced, but only if it is a socket
    /// nobody answers on: a live plugin is never taken over.
    pub fn listen(&self) -> std::io::Result<tokio::net::UnixListener> {
        if let Endpoint::Path(p) = self {
            use std::os::unix::fs::FileTypeExt;
            if let Ok(meta) = std::fs::symlink_metadata(p) {
                if !meta.file_type().is_socket() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        format!(
                            "{} exists and is not a socket; not replacing it",
                            p.display()
                        ),
                    ));
                }
                if std::os::unix::net::UnixStream::connect(p).is_ok() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!("another process is serving on {}", p.display()),
                    ));
                }
                std::fs::remove_file(p)?;
            }
        }
        let listener = std::os::unix::net::UnixListener::bind_addr(&self.socket_addr()?)?;
        listener.set_nonblocking(true)?;
        tokio::net::UnixListener::from_std(listener)
    }

    /// Removes the socket file (nothing to do for an abstract socket).
    pub fn remove(&self) {
        if let Endpoint::Path(p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Path(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Abstract(name) => write!(f, "unix:///@{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_forms() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/kms.sock"),
            Ok(Endpoint::Path("/var/run/kms.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("unix:///@kms-provider.sock"),
            Ok(Endpoint::Abstract("kms-provider.sock".into()))
        );
        assert!(Endpoint::parse("tcp://127.0.0.1:1").is_err());
        assert!(Endpoint::parse("unix://").is_err());
        assert!(Endpoint::parse("unix:///@").is_err());
        assert_eq!(
            Endpoint::parse("unix:///@x").map(|e| e.to_string()),
            Ok("unix:///@x".to_string())
        );
    }
}
