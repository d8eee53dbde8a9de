//! A running rtbd: the engine, its HTTP listener and its background tasks,
//! started and stopped as one. The binary and the integration tests start
//! servers the same way.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::Routing;
use crate::engine::Engine;
use crate::http;

/// How often reservations are expired and old records dropped.
pub const TICK: Duration = Duration::from_millis(10);

/// How to start a server beyond what the config says.
#[derive(Clone, Debug)]
pub struct Options {
    /// Listen here instead of `server.listen`.
    pub listen: Option<SocketAddr>,
    pub clock: Clock,
    /// How often the background task expires reservations; `None` leaves
    /// it to the caller of [`Engine::tick`] (tests with a manual clock).
    pub tick: Option<Duration>,
}

impl Default for Options {
    fn default() -> Options {
        Options { listen: None, clock: Clock::system(), tick: Some(TICK) }
    }
}

pub struct Server {
    addr: SocketAddr,
    engine: Arc<Engine>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds the listener and starts serving.
    pub async fn start(routing: Routing, options: Options) -> io::Result<Server> {
        let listen = options.listen.unwrap_or(routing.server.listen);
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let engine = Arc::new(Engine::new(routing, options.clock));
        let (stop, stopped) = watch::channel(false);

        let mut tasks = vec![tokio::spawn(http::serve(listener, engine.clone(), wait(stopped.clone())))];
        if let Some(every) = options.tick {
            tasks.push(tokio::spawn(tick(engine.clone(), every, stopped)));
        }
        Ok(Server { addr, engine, stop, tasks })
    }

    /// The address it listens on (with the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops accepting, lets requests in flight finish, and returns when
    /// everything has stopped.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Runs until SIGINT or SIGTERM, then stops.
    pub async fn run_until_signal(self) {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.stop().await;
    }
}

/// Completes when the stop flag is raised (or its sender is gone).
async fn wait(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|&s| s).await;
}

async fn tick(engine: Arc<Engine>, every: Duration, stopped: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = std::pin::pin!(wait(stopped));
    loop {
        tokio::select! {
            _ = interval.tick() => engine.tick(),
            () = &mut stop => break,
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
