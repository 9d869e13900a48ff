//! One file watcher for every tenant of a process: a single notify watcher (inotify on Linux,
//! one OS thread whatever the tenant count) whose events are routed to the tenant whose folder
//! or target config they touch. An event is a nudge, not data: the tenant re-reads its files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

/// Where events go: paths under `prefix` (recursively) or equal to `exact`.
struct Route {
    prefix: Option<PathBuf>,
    exact: Option<PathBuf>,
    tx: Arc<Notify>,
    /// The watched paths this route counts on.
    watched: Vec<(PathBuf, bool)>,
}

#[derive(Default)]
struct Routes {
    next: u64,
    routes: BTreeMap<u64, Route>,
    /// Watched paths and how many routes use each (one inotify watch per path).
    watched: BTreeMap<(PathBuf, bool), usize>,
}

/// A route's registration; unregister it with [`FileRouter::remove`].
#[derive(Debug)]
pub struct RouteId(u64);

pub struct FileRouter {
    routes: Arc<Mutex<Routes>>,
    watcher: Mutex<notify::RecommendedWatcher>,
}

impl FileRouter {
    pub fn new() -> notify::Result<Self> {
        let routes: Arc<Mutex<Routes>> = Default::default();
        let seen = Arc::clone(&routes);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Reading files makes access events: they are dropped before taking the routes'
            // lock, which `add` holds while it waits for the watcher's thread (this one).
            if matches!(&event, Ok(e) if matches!(e.kind, notify::EventKind::Access(_))) {
                return;
            }
            let routes = seen.lock().unwrap_or_else(|e| e.into_inner());
            // A watcher error or a lost event (the inotify queue overflowed): any tenant may
            // have changed, so every tenant re-reads its files.
            let event = match event {
                Ok(event) if !event.need_rescan() => event,
                _ => {
                    for route in routes.routes.values() {
                        route.tx.notify_one();
                    }
                    return;
                }
            };
            for path in &event.paths {
                // Stored if nobody waits yet; repeated nudges collapse into one.
                if let Some(route) = routes.best(path) {
                    route.tx.notify_one();
                }
                // A folder created or removed is news for its parent's route too (a tenant
                // folder leaving the tenants folder).
                if let Some(parent) = path.parent() {
                    for route in routes.routes.values() {
                        if route.prefix.as_deref() == Some(parent) {
                            route.tx.notify_one();
                        }
                    }
                }
            }
        })?;
        Ok(Self {
            routes,
            watcher: Mutex::new(watcher),
        })
    }

    /// Sends a nudge to `tx` for every change under `dir` (recursively, when `recursive`) and
    /// to `file` (watched through its folder). The most specific route wins: a tenant folder
    /// inside a watched tenants folder gets its own events.
    pub fn add(
        &self,
        dir: Option<(&Path, bool)>,
        file: Option<&Path>,
        tx: Arc<Notify>,
    ) -> notify::Result<RouteId> {
        let mut paths = Vec::new();
        if let Some((dir, recursive)) = dir {
            paths.push((dir.to_path_buf(), recursive));
        }
        if let Some(file) = file {
            let covered = dir.is_some_and(|(d, recursive)| recursive && file.starts_with(d));
            if let Some(parent) = file.parent().filter(|p| !covered && p.exists()) {
                paths.push((parent.to_path_buf(), false));
            }
        }
        // The watcher's lock serializes adds and removes. The routes' lock is never held across
        // `watch`/`unwatch`: they wait for the watcher's thread, which takes it to route events.
        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        let first: Vec<bool> = {
            let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            paths
                .iter()
                .map(|key| !routes.watched.contains_key(key))
                .collect()
        };
        for (i, (path, recursive)) in paths.iter().enumerate() {
            if !first[i] {
                continue;
            }
            let mode = if *recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            if let Err(e) = watcher.watch(path, mode) {
                for (done, _) in paths[..i].iter().zip(&first).filter(|(_, f)| **f) {
                    let _ = watcher.unwatch(&done.0);
                }
                return Err(e);
            }
        }
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        for key in &paths {
            *routes.watched.entry(key.clone()).or_default() += 1;
        }
        let id = routes.next;
        routes.next += 1;
        routes.routes.insert(
            id,
            Route {
                prefix: dir.map(|(d, _)| d.to_path_buf()),
                exact: file.map(Path::to_path_buf),
                tx,
                watched: paths,
            },
        );
        Ok(RouteId(id))
    }

    /// Stops routing to a route, and watching the paths no other route needs.
    pub fn remove(&self, id: RouteId) {
        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        let unneeded: Vec<PathBuf> = {
            let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            let Some(route) = routes.routes.remove(&id.0) else {
                return;
            };
            route
                .watched
                .iter()
                .filter_map(|key| routes.release(key))
                .collect()
        };
        for path in unneeded {
            // The folder may be gone already (a removed tenant): nothing left to unwatch.
            let _ = watcher.unwatch(&path);
        }
    }
}

impl Routes {
    /// The route an event on `path` belongs to: an exact file first, then the longest prefix.
    fn best(&self, path: &Path) -> Option<&Route> {
        self.routes
            .values()
            .find(|r| r.exact.as_deref() == Some(path))
            .or_else(|| {
                self.routes
                    .values()
                    .filter(|r| r.prefix.as_deref().is_some_and(|p| path.starts_with(p)))
                    .max_by_key(|r| r.prefix.as_ref().map_or(0, |p| p.as_os_str().len()))
            })
    }

    /// Counts one route fewer on `key`; the path when no route needs it any more.
    fn release(&mut self, key: &(PathBuf, bool)) -> Option<PathBuf> {
        let count = self.watched.get_mut(key)?;
        *count -= 1;
        if *count > 0 {
            return None;
        }
        self.watched.remove(key);
        Some(key.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Routes are added while events (reads included) flow through the watcher's thread: the
    /// adds finish, and events still reach their route. (Holding the routes' lock across
    /// `watch` once deadlocked the two: `watch` waits for the thread, the thread for the lock.)
    #[test]
    fn routes_are_added_while_events_flow() {
        let root = tempfile::tempdir().unwrap();
        let busy = root.path().join("busy");
        std::fs::create_dir(&busy).unwrap();
        std::fs::write(busy.join("f"), "x").unwrap();
        let router = Arc::new(FileRouter::new().unwrap());
        let busy_tx = Arc::new(Notify::new());
        router.add(Some((&busy, true)), None, busy_tx).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (busy, stop) = (busy.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::fs::write(busy.join("f"), n.to_string()).unwrap();
                    let _ = std::fs::read(busy.join("f"));
                    n += 1;
                }
            })
        };
        let (done_tx, done) = std::sync::mpsc::channel();
        let adder = {
            let (router, root) = (Arc::clone(&router), root.path().to_path_buf());
            std::thread::spawn(move || {
                for i in 0..200 {
                    let dir = root.join(format!("t{i}"));
                    std::fs::create_dir(&dir).unwrap();
                    router
                        .add(Some((&dir, true)), None, Arc::new(Notify::new()))
                        .unwrap();
                }
                let _ = done_tx.send(());
            })
        };
        let finished = done.recv_timeout(Duration::from_secs(60));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert!(finished.is_ok(), "adding routes stalled under events");
        adder.join().unwrap();

        // An event under a new route reaches it.
        let last = root.path().join("last");
        std::fs::create_dir(&last).unwrap();
        let tx = Arc::new(Notify::new());
        router
            .add(Some((&last, true)), None, Arc::clone(&tx))
            .unwrap();
        std::fs::write(last.join("g"), "y").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let nudged = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), tx.notified()).await });
        assert!(nudged.is_ok(), "no nudge for a write under a new route");
    }
}
