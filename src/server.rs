//! A running rtbd: the engine, its HTTP listener and its background tasks,
//! started and stopped as one. The binary and the integration tests start
//! servers the same way.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::{self, Routing};
use crate::engine::Engine;
use crate::{http, snapshot};

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
    /// The config file: reloaded on `POST /admin/reload` and SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Reload the config file when it changes.
    pub watch: bool,
    /// Where snapshots are written and restored from; `None`: no
    /// persistence.
    pub data_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            listen: None,
            clock: Clock::system(),
            tick: Some(TICK),
            config_path: None,
            watch: false,
            data_dir: None,
        }
    }
}

pub struct Server {
    addr: SocketAddr,
    engine: Arc<Engine>,
    stop: watch::Sender<bool>,
    serving: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Restores the newest good snapshot (if persistence is on), binds the
    /// listener and starts serving. A data folder whose snapshots are all
    /// bad refuses the start: it never starts silently empty.
    pub async fn start(routing: Routing, options: Options) -> io::Result<Server> {
        let listen = options.listen.unwrap_or(routing.server.listen);
        let engine = Engine::new(routing, options.clock)
            .with_config_path(options.config_path.clone())
            .with_data_dir(options.data_dir.clone());
        if let Some(dir) = engine.data_dir() {
            match snapshot::load_newest(dir).map_err(io::Error::other)? {
                Some((path, image)) => {
                    let (live, records) = (image.live(), image.records());
                    snapshot::restore(&engine, image);
                    tracing::info!(path = %path.display(), live, records, "restored from snapshot");
                }
                None => tracing::info!(dir = %dir.display(), "no snapshot yet: starting empty"),
            }
        }
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let engine = Arc::new(engine);
        let (stop, stopped) = watch::channel(false);

        let serving = tokio::spawn(http::serve(listener, engine.clone(), wait(stopped.clone())));
        let mut tasks = Vec::new();
        if let Some(every) = options.tick {
            tasks.push(tokio::spawn(tick(engine.clone(), every, stopped.clone())));
        }
        if engine.data_dir().is_some() {
            tasks.push(tokio::spawn(snapshots(engine.clone(), stopped.clone())));
        }
        if let (true, Some(path)) = (options.watch, options.config_path) {
            match config::watch::spawn(engine.clone(), path.clone(), wait(stopped.clone())) {
                Ok(task) => tasks.push(task),
                Err(e) => tracing::warn!(path = %path.display(), "cannot watch the config file: {e}"),
            }
        }
        Ok(Server { addr, engine, stop, serving, tasks })
    }

    /// The address it listens on (with the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops accepting, lets requests in flight finish, writes a final
    /// snapshot, and returns when everything has stopped.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.serving.await;
        for task in self.tasks {
            let _ = task.await;
        }
        if self.engine.data_dir().is_some() {
            let engine = self.engine.clone();
            let _ = tokio::task::spawn_blocking(move || engine.snapshot()).await;
        }
    }

    /// Runs until SIGINT or SIGTERM, reloading the config on SIGHUP, then
    /// stops.
    pub async fn run_until_signal(self) {
        #[cfg(unix)]
        let hangups = {
            let engine = self.engine.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hangup) = signal(SignalKind::hangup()) else { return };
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the config");
                    let engine = engine.clone();
                    let _ = tokio::task::spawn_blocking(move || engine.reload()).await;
                }
            })
        };
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight, then a final snapshot");
        #[cfg(unix)]
        hangups.abort();
        self.stop().await;
    }
}

/// Writes a snapshot every `snapshot_interval_secs`. The setting is looked
/// at every second, so a reload that changes it applies at once (a day's
/// interval cut to five seconds does not wait out the day).
async fn snapshots(engine: Arc<Engine>, stopped: watch::Receiver<bool>) {
    let mut stop = std::pin::pin!(wait(stopped));
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                let secs = engine.routing().server.snapshot_interval_secs;
                if secs > 0 && last.elapsed() >= Duration::from_secs(secs) {
                    last = tokio::time::Instant::now();
                    let engine = engine.clone();
                    let _ = tokio::task::spawn_blocking(move || engine.snapshot()).await;
                }
            }
            () = &mut stop => return,
        }
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
