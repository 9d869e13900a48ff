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
            let Ok(event) = event else { return };
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            let routes = seen.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        for (i, (path, recursive)) in paths.iter().enumerate() {
            let first = !routes.watched.contains_key(&(path.clone(), *recursive));
            if first {
                let mode = if *recursive {
                    RecursiveMode::Recursive
                } else {
                    RecursiveMode::NonRecursive
                };
                if let Err(e) = watcher.watch(path, mode) {
                    for done in &paths[..i] {
                        routes.unwatch(&mut watcher, done);
                    }
                    return Err(e);
                }
            }
            *routes
                .watched
                .entry((path.clone(), *recursive))
                .or_default() += 1;
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
        drop(watcher);
        drop(routes);
        Ok(RouteId(id))
    }

    /// Stops routing to a route, and watching the paths no other route needs.
    pub fn remove(&self, id: RouteId) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(route) = routes.routes.remove(&id.0) else {
            return;
        };
        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        for key in &route.watched {
            routes.unwatch(&mut watcher, key);
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

    fn unwatch(&mut self, watcher: &mut notify::RecommendedWatcher, key: &(PathBuf, bool)) {
        if let Some(count) = self.watched.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                self.watched.remove(key);
                // The folder may be gone already (a removed tenant): nothing left to unwatch.
                let _ = watcher.unwatch(&key.0);
            }
        }
    }
}
