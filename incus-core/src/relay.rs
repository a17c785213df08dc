//! Relay mode: this process opens the migration websockets of both servers and copies every
//! message between each pair, opcode preserved (an empty text message is a barrier between
//! volumes and must pass untouched). The control pair is connected first. Neither server
//! dials the other, so the source may listen only on its unix socket.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::client::{Client, escape};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// Why the relay failed: one line; the underlying error is part of it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The unix socket of a local server cannot be connected.
    #[error("{}: {error}", .path.display())]
    Socket { path: PathBuf, error: io::Error },
    /// The TCP connection to a server failed.
    #[error("{host}: {error}")]
    Tcp { host: String, error: io::Error },
    /// The TLS server name is not valid.
    #[error("{0}")]
    ServerName(rustls::pki_types::InvalidDnsNameError),
    /// The TLS handshake failed.
    #[error("{host}: TLS: {error}")]
    Tls { host: String, error: io::Error },
    /// The client has neither a unix socket nor TLS.
    #[error("no transport for the websocket")]
    NoTransport,
    /// The websocket request cannot be built.
    #[error("{0}")]
    Request(Box<tungstenite::Error>),
    /// The websocket handshake failed.
    #[error("{host}: websocket: {error}")]
    Websocket {
        host: String,
        error: Box<tungstenite::Error>,
    },
    /// One end of a named stream could not be connected.
    #[error("connecting the {side}'s {stream} stream: {error}")]
    Connect {
        side: Side,
        stream: String,
        error: Box<RelayError>,
    },
    /// The relay thread's runtime could not start.
    #[error("{0}")]
    Runtime(io::Error),
    /// The relay thread panicked.
    #[error("the relay thread failed")]
    Panicked,
}

/// Which server an [`End`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

/// One end of a stream: an operation's websocket on one server.
pub struct End {
    path: String,
    socket: Option<PathBuf>,
    host: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl End {
    /// The websocket of operation `op` with `secret`, on the server behind `client`.
    pub fn new(client: &Client, op: &str, secret: &str) -> End {
        let host = client
            .url()
            .map(|u| u.trim_start_matches("https://").to_string())
            .unwrap_or_else(|| "unix.socket".into());
        End {
            path: format!(
                "/1.0/operations/{}/websocket?secret={}",
                escape(op),
                escape(secret)
            ),
            socket: client.socket_path().map(|p| p.to_path_buf()),
            host,
            tls: client.tls_config(),
        }
    }

    async fn connect(&self) -> Result<Socket, RelayError> {
        let stream: Box<dyn Io> = match (&self.socket, &self.tls) {
            (Some(path), _) => Box::new(tokio::net::UnixStream::connect(path).await.map_err(
                |error| RelayError::Socket {
                    path: path.clone(),
                    error,
                },
            )?),
            (None, Some(tls)) => {
                let tcp = tokio::net::TcpStream::connect(&self.host)
                    .await
                    .map_err(|error| RelayError::Tcp {
                        host: self.host.clone(),
                        error,
                    })?;
                let name = rustls::pki_types::ServerName::try_from("incus")
                    .map_err(RelayError::ServerName)?;
                Box::new(
                    tokio_rustls::TlsConnector::from(tls.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|error| RelayError::Tls {
                            host: self.host.clone(),
                            error,
                        })?,
                )
            }
            (None, None) => return Err(RelayError::NoTransport),
        };
        let request = format!("ws://{}{}", self.host, self.path)
            .into_client_request()
            .map_err(|e| RelayError::Request(Box::new(e)))?;
        let (socket, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(|e| RelayError::Websocket {
                host: self.host.clone(),
                error: Box::new(e),
            })?;
        Ok(socket)
    }
}

/// A named stream (`control`, `fs`, …) between the two servers.
pub struct Pair {
    pub name: String,
    pub source: End,
    pub target: End,
}

/// A running relay.
pub struct Relay {
    thread: Option<JoinHandle<Result<(), RelayError>>>,
    stop: Option<oneshot::Sender<()>>,
}

/// Connects every pair (in order: put `control` first) and copies messages in a background
/// thread until the servers close the streams or [`Relay::finish`] is called.
pub fn start(pairs: Vec<Pair>) -> Relay {
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RelayError::Runtime)?;
        runtime.block_on(async move {
            let mut splices = Vec::new();
            for pair in &pairs {
                let connecting = |side| {
                    let stream = pair.name.clone();
                    move |e| RelayError::Connect {
                        side,
                        stream,
                        error: Box::new(e),
                    }
                };
                let source = pair
                    .source
                    .connect()
                    .await
                    .map_err(connecting(Side::Source))?;
                let target = pair
                    .target
                    .connect()
                    .await
                    .map_err(connecting(Side::Target))?;
                splices.push(tokio::spawn(splice(source, target)));
            }
            let all = futures_util::future::join_all(splices);
            tokio::select! {
                _ = all => {}
                _ = stopped => {}
            }
            Ok(())
        })
    });
    Relay {
        thread: Some(thread),
        stop: Some(stop),
    }
}

impl Relay {
    /// Stops copying and reports a connection error, if there was one.
    pub fn finish(mut self) -> Result<(), RelayError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(RelayError::Panicked),
            None => Ok(()),
        }
    }
}

async fn splice(a: Socket, b: Socket) {
    let (a_tx, a_rx) = a.split();
    let (b_tx, b_rx) = b.split();
    tokio::join!(copy(a_rx, b_tx), copy(b_rx, a_tx));
}

/// Copies data messages (binary, and text: an empty text message is a barrier) until the
/// reading side ends, then closes the writing side.
async fn copy(
    mut from: futures_util::stream::SplitStream<Socket>,
    mut to: futures_util::stream::SplitSink<Socket, Message>,
) {
    while let Some(Ok(message)) = from.next().await {
        let data = matches!(message, Message::Binary(_) | Message::Text(_));
        if matches!(message, Message::Close(_)) || (data && to.send(message).await.is_err()) {
            break;
        }
    }
    let _ = to.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_before() {
        let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let tls = RelayError::Tls {
            host: "10.0.0.2:8443".into(),
            error: refused(),
        };
        assert_eq!(tls.to_string(), "10.0.0.2:8443: TLS: refused");
        let nested = RelayError::Connect {
            side: Side::Target,
            stream: "fs".into(),
            error: Box::new(RelayError::Tcp {
                host: "10.0.0.2:8443".into(),
                error: refused(),
            }),
        };
        assert_eq!(
            nested.to_string(),
            "connecting the target's fs stream: 10.0.0.2:8443: refused"
        );
        let socket = RelayError::Connect {
            side: Side::Source,
            stream: "control".into(),
            error: Box::new(RelayError::Socket {
                path: "/var/lib/incus/unix.socket".into(),
                error: refused(),
            }),
        };
        assert_eq!(
            socket.to_string(),
            "connecting the source's control stream: /var/lib/incus/unix.socket: refused"
        );
        assert_eq!(
            RelayError::NoTransport.to_string(),
            "no transport for the websocket"
        );
        assert_eq!(RelayError::Panicked.to_string(), "the relay thread failed");
    }
}
