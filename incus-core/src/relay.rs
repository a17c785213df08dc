//! Relay mode: this process opens the migration websockets of both servers and copies every
//! message between each pair, opcode preserved (an empty text message is a barrier between
//! volumes and must pass untouched). The control pair is connected first. Neither server
//! dials the other, so the source may listen only on its unix socket.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::client::{Client, escape};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

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

    async fn connect(&self) -> Result<Socket, String> {
        let stream: Box<dyn Io> = match (&self.socket, &self.tls) {
            (Some(path), _) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            (None, Some(tls)) => {
                let tcp = tokio::net::TcpStream::connect(&self.host)
                    .await
                    .map_err(|e| format!("{}: {e}", self.host))?;
                let name =
                    rustls::pki_types::ServerName::try_from("incus").map_err(|e| e.to_string())?;
                Box::new(
                    tokio_rustls::TlsConnector::from(tls.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("{}: TLS: {e}", self.host))?,
                )
            }
            (None, None) => return Err("no transport for the websocket".into()),
        };
        let request = format!("ws://{}{}", self.host, self.path)
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let (socket, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(|e| format!("{}: websocket: {e}", self.host))?;
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
    thread: Option<JoinHandle<Result<(), String>>>,
    stop: Option<oneshot::Sender<()>>,
}

/// Connects every pair (in order: put `control` first) and copies messages in a background
/// thread until the servers close the streams or [`Relay::finish`] is called.
pub fn start(pairs: Vec<Pair>) -> Relay {
    let (stop, stopped) = oneshot::channel::<()>();
    let thread =
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let mut splices = Vec::new();
                for pair in &pairs {
                    let source = pair.source.connect().await.map_err(|e| {
                        format!("connecting the source's {} stream: {e}", pair.name)
                    })?;
                    let target = pair.target.connect().await.map_err(|e| {
                        format!("connecting the target's {} stream: {e}", pair.name)
                    })?;
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
    pub fn finish(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err("the relay thread failed".into()),
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
