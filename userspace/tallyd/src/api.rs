//! The REST/JSON API on the Unix socket (routes: tally::api). Handlers run the blocking host
//! operations on the blocking pool, side by side: an operation that changes a container
//! holds only that container's lock (a second one on it gets `locked`), reads hold none.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use crate::events::EventLog;
use anyhow::{Context, Result};
use axum::{
    extract::{rejection::JsonRejection, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use tally::{
    api::{
        ApiError, Attach, ContainerView, CreateRequest, EventView, ExitCode, FileReadView, SetLimits, Status, Stop,
        TemplateInfo,
    },
    ct::{rootfs::Rootfs, CtId, Host, HostError},
    kernel::reads,
    ubc::{parse_barrier_limit, Resource},
};

type Shared = Arc<Host>;

#[derive(Clone)]
struct AppState {
    host: Shared,
    events: Arc<Mutex<EventLog>>,
}

pub async fn serve(host: Shared, events: Arc<Mutex<EventLog>>, socket: PathBuf, ready: impl FnOnce()) -> Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket left by a tallyd that was killed: nobody listens on it any more.
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;

    let app = Router::new()
        .route("/v1/containers", get(list))
        .route(
            "/v1/containers/{ctid}",
            get(on_ct(|h, ct| h.view(ct)))
                .post(create)
                .delete(on_ct(|h, ct| h.destroy(ct).map(|()| serde_json::json!({})))),
        )
        .route("/v1/containers/{ctid}/status", get(on_ct(|h, ct| h.status(ct))))
        .route("/v1/containers/{ctid}/start", post(on_ct(|h, ct| h.start(ct))))
        .route("/v1/containers/{ctid}/stop", post(stop))
        .route("/v1/containers/{ctid}/restart", post(on_ct(|h, ct| h.restart(ct))))
        .route("/v1/containers/{ctid}/mount", post(on_ct(|h, ct| h.mount(ct))))
        .route("/v1/containers/{ctid}/umount", post(on_ct(|h, ct| h.umount(ct))))
        .route("/v1/containers/{ctid}/limits", put(set_limits))
        .route("/v1/templates", get(templates).post(import_template))
        .route("/v1/templates/create", post(create_template))
        .route("/v1/containers/{ctid}/attach", post(attach))
        .route("/v1/containers/{ctid}/join", get(on_ct(|h, ct| h.join_plan(ct))))
        .route("/v1/events", get(recent_events))
        .route("/v1/containers/{ctid}/reads", get(container_reads))
        .route(
            "/v1/cache",
            get(|State(s): State<AppState>| async move { with_host(s.host, |h| h.cache_status()).await.map(Json) }),
        )
        .route("/v1/cache/promote", post(cache_promote))
        .route(
            "/v1/cache/gc",
            post(|State(s): State<AppState>| async move { with_host(s.host, |h| h.cache_gc()).await.map(Json) }),
        )
        .route(
            "/v1/cache/drop",
            post(|State(s): State<AppState>| async move {
                with_host(s.host, |h| h.cache_drop())
                    .await
                    .map(|n| Json(serde_json::json!({ "dropped": n })))
            }),
        )
        .fallback(|| async { failure(ExitCode::BadArgument, "no such API route") })
        // Requests are small (the largest carries an OpenVZ config file).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(root_only))
        .with_state(AppState { host, events });
    ready();
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        log::info!("stopping; programs and counters stay pinned");
    };
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(shutdown)
        .await?;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// The largest request body tallyd reads.
const MAX_BODY: usize = 256 * 1024;

/// Who is on the other end of a connection (SO_PEERCRED).
#[derive(Clone, Copy, Debug)]
struct Peer {
    uid: Option<u32>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::UnixListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        Peer {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}

/// The socket is root's (mode 0600); this holds even if someone loosens its mode.
async fn root_only(
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<Peer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if peer.uid != Some(0) {
        return failure(
            ExitCode::PermissionDenied,
            format!("tallyd's API is root's only (peer uid {:?})", peer.uid),
        )
        .into_response();
    }
    next.run(request).await
}

struct Failure(ApiError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

fn failure(code: ExitCode, message: impl ToString) -> Failure {
    Failure(ApiError {
        code,
        message: message.to_string(),
    })
}

impl From<HostError> for Failure {
    fn from(e: HostError) -> Self {
        failure(e.exit_code(), e)
    }
}

fn ctid(raw: &str) -> Result<CtId, Failure> {
    CtId::parse(raw).map_err(|e| failure(ExitCode::BadValue, e))
}

fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, Failure> {
    json.map(|Json(t)| t)
        .map_err(|e| failure(ExitCode::BadArgument, format!("bad request body: {}", e.body_text())))
}

/// Runs a host operation on the blocking pool.
async fn with_host<T: Send + 'static>(
    host: Shared,
    op: impl FnOnce(&Host) -> Result<T, HostError> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(move || op(&host))
        .await
        .map_err(|e| failure(ExitCode::SystemError, e))?
        .map_err(Failure::from)
}

/// A handler for a route that takes only the container id: checks the id, runs `op` on the
/// host, answers with its result as JSON.
fn on_ct<T, F>(
    op: F,
) -> impl Fn(
    State<AppState>,
    Path<String>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Json<T>, Failure>> + Send>>
       + Clone
       + Send
       + Sync
       + 'static
where
    T: serde::Serialize + Send + 'static,
    F: Fn(&Host, &CtId) -> Result<T, HostError> + Clone + Send + Sync + 'static,
{
    move |State(AppState { host, .. }), Path(raw)| {
        let op = op.clone();
        Box::pin(async move {
            let ct = ctid(&raw)?;
            with_host(host, move |h| op(h, &ct)).await.map(Json)
        })
    }
}

async fn list(State(AppState { host, .. }): State<AppState>) -> Result<Json<Vec<ContainerView>>, Failure> {
    with_host(host, |h| h.configured()?.iter().map(|ct| h.view(ct)).collect())
        .await
        .map(Json)
}

async fn set_limits(
    State(AppState { host, .. }): State<AppState>,
    Path(raw): Path<String>,
    json: Result<Json<SetLimits>, JsonRejection>,
) -> Result<Json<ContainerView>, Failure> {
    let ct = ctid(&raw)?;
    let request = body(json)?;
    // Every value is checked before anything changes.
    let mut limits = BTreeMap::new();
    for (name, value) in &request.limits {
        let r = Resource::from_name(name)
            .ok_or_else(|| failure(ExitCode::BadArgument, format!("unknown beancounter '{name}'")))?;
        let bl = parse_barrier_limit(r, value).map_err(|e| failure(ExitCode::BadValue, e))?;
        limits.insert(r, bl);
    }
    for key in request.settings.keys() {
        if !SETTINGS.contains(&key.as_str()) {
            return Err(failure(
                ExitCode::BadArgument,
                format!("unknown setting '{key}' (settings: {})", SETTINGS.join(", ")),
            ));
        }
    }
    let (save, settings) = (request.save, request.settings);
    with_host(host, move |h| h.set_limits(&ct, &limits, &settings, save))
        .await
        .map(Json)
}

/// Config keys `PUT .../limits` may set besides beancounters.
const SETTINGS: &[&str] = &["CPUUNITS", "CPULIMIT", "CPUS"];

async fn create(
    State(AppState { host, .. }): State<AppState>,
    Path(raw): Path<String>,
    json: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<Json<ContainerView>, Failure> {
    let ct = ctid(&raw)?;
    let request = body(json)?;
    with_host(host, move |h| h.create(&ct, &request)).await.map(Json)
}

async fn stop(
    State(AppState { host, .. }): State<AppState>,
    Path(raw): Path<String>,
    json: Result<Json<Stop>, JsonRejection>,
) -> Result<Json<Status>, Failure> {
    let ct = ctid(&raw)?;
    let Stop { fast } = body(json)?;
    with_host(host, move |h| h.stop(&ct, fast)).await.map(Json)
}

async fn templates(State(AppState { host, .. }): State<AppState>) -> Result<Json<Vec<TemplateInfo>>, Failure> {
    with_host(host, |h| Ok(h.templates().list()?)).await.map(Json)
}

async fn import_template(
    State(AppState { host, .. }): State<AppState>,
    json: Result<Json<tally::api::ImportTemplate>, JsonRejection>,
) -> Result<Json<TemplateInfo>, Failure> {
    let req = body(json)?;
    if !req.archive.is_absolute() {
        return Err(failure(ExitCode::BadValue, "the archive path must be absolute"));
    }
    with_host(host, move |h| {
        Ok(h.templates()
            .import(&req.name, &req.archive, req.halt_signal.as_deref())?)
    })
    .await
    .map(Json)
}

/// Runs debootstrap without holding the host: it takes minutes, and containers keep being
/// served meanwhile.
async fn create_template(
    State(AppState { host, .. }): State<AppState>,
    json: Result<Json<tally::api::CreateTemplate>, JsonRejection>,
) -> Result<Json<TemplateInfo>, Failure> {
    let req = body(json)?;
    if req.debs.as_ref().is_some_and(|d| !d.is_absolute()) {
        return Err(failure(ExitCode::BadValue, "the debs tarball path must be absolute"));
    }
    let templates = with_host(host, |h| Ok(h.templates())).await?;
    tokio::task::spawn_blocking(move || templates.create(&req.dist, req.mirror.as_deref(), req.debs.as_deref()))
        .await
        .map_err(|e| failure(ExitCode::SystemError, e))?
        .map(Json)
        .map_err(|e| Failure::from(HostError::Template(e)))
}

/// Promotes what the kernel's read statistics say several containers read of their own
/// copies (tallyd also does this every PFCACHE_INTERVAL).
async fn cache_promote(State(AppState { host, .. }): State<AppState>) -> Result<Json<serde_json::Value>, Failure> {
    with_host(host, promote_from_kernel)
        .await
        .map(|n| Json(serde_json::json!({ "promoted": n })))
}

/// Promotion from the pinned read statistics.
fn promote_from_kernel(h: &Host) -> Result<usize, HostError> {
    let reads = tally::kernel::reads::file_reads(&h.instance.pins())
        .map_err(|e| HostError::Io {
            path: h.instance.pins().root.clone(),
            source: std::io::Error::other(e.to_string()),
        })?
        .into_iter()
        .map(|r| tally::ct::cache::ReadKey {
            cgroup_id: r.cgroup_id,
            dev: r.dev,
            ino: r.ino,
        })
        .collect::<Vec<_>>();
    h.cache_promote(&reads)
}

/// tallyd's own promotion round, every PFCACHE_INTERVAL seconds (pfcache.conf; default 300,
/// 0 turns it off).
pub async fn cache_rounds(host: Shared) {
    loop {
        let interval = tally::ct::cache::Settings::load(&host.instance.root)
            .map(|s| s.interval)
            .unwrap_or(300);
        tokio::time::sleep(std::time::Duration::from_secs(if interval == 0 {
            60
        } else {
            interval
        }))
        .await;
        if interval == 0 {
            continue;
        }
        match with_host(host.clone(), promote_from_kernel).await {
            Ok(0) => {}
            Ok(n) => log::info!("cache: {n} container copies promoted (linked at their next start)"),
            Err(Failure(e)) => log::warn!("cache: promotion failed: {}", e.message),
        }
    }
}

async fn attach(
    State(AppState { host, .. }): State<AppState>,
    Path(raw): Path<String>,
    json: Result<Json<Attach>, JsonRejection>,
) -> Result<Json<serde_json::Value>, Failure> {
    let ct = ctid(&raw)?;
    let Attach { pid } = body(json)?;
    with_host(host, move |h| h.attach(&ct, pid)).await?;
    Ok(Json(serde_json::json!({})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
}

async fn recent_events(State(state): State<AppState>, query: Query<EventsQuery>) -> Json<Vec<EventView>> {
    Json(
        state
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .after(query.after),
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadsQuery {
    top: Option<usize>,
}

/// The files the container read most (by bytes), from the pinned read statistics, with their
/// paths when they are in its upper directory.
async fn container_reads(
    State(AppState { host, .. }): State<AppState>,
    Path(raw): Path<String>,
    query: Query<ReadsQuery>,
) -> Result<Json<Vec<FileReadView>>, Failure> {
    let ct = ctid(&raw)?;
    let top = query.top.unwrap_or(tally::api::DEFAULT_TOP_READS);
    with_host(host, move |h| {
        if !h.exists(&ct) {
            return Err(HostError::NoSuchContainer(ct));
        }
        let cgroup_id = h.cgroup(&ct)?.id()?;
        let all = reads::file_reads(&h.instance.pins())?;
        let top = reads::top_files(&all, cgroup_id, top);
        let upper = Rootfs::new(&h.instance.root, &ct).private.join("upper");
        let wanted: Vec<(u64, u64)> = top.iter().map(|r| (r.dev, r.ino)).collect();
        let paths = reads::find_paths(&upper, &wanted, MAX_PATH_WALK);
        Ok(top
            .into_iter()
            .map(|read| FileReadView {
                path: paths
                    .get(&(read.dev, read.ino))
                    .map(|rel| std::path::Path::new("/").join(rel)),
                read,
            })
            .collect())
    })
    .await
    .map(Json)
}

/// How many entries of a container's upper directory a reads request looks through for paths.
const MAX_PATH_WALK: usize = 20_000;

#[cfg(test)]
mod openapi {
    //! The OpenAPI document (userspace/tallyd/openapi.json) against the code: the same routes
    //! and methods, and request schemas with exactly the fields the request types have.

    use std::collections::BTreeSet;

    const DOC: &str = include_str!("../openapi.json");
    const SOURCE: &str = include_str!("api.rs");

    fn doc() -> serde_json::Value {
        serde_json::from_str(DOC).expect("openapi.json is JSON")
    }

    /// (path, method) of every `.route(...)` in this file's router.
    fn routes_in_code() -> BTreeSet<(String, String)> {
        let router = SOURCE.split(".fallback(").next().expect("a router");
        let mut out = BTreeSet::new();
        for chunk in router.split(".route(").skip(1) {
            let path = chunk.split('"').nth(1).expect("a quoted path").to_string();
            for method in ["get", "post", "put", "delete"] {
                let used = chunk.match_indices(&format!("{method}(")).any(|(i, _)| {
                    let before = chunk[..i].chars().last();
                    matches!(before, Some('.') | Some(' ') | Some('\n') | Some('('))
                });
                if used {
                    out.insert((path.clone(), method.to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn the_document_has_the_routes_of_the_code() {
        let doc = doc();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in ["get", "post", "put", "delete"] {
                if item.get(method).is_some() {
                    documented.insert((path.clone(), method.to_string()));
                }
            }
        }
        assert_eq!(documented, routes_in_code());
    }

    fn fields(value: serde_json::Value) -> BTreeSet<String> {
        value.as_object().expect("an object").keys().cloned().collect()
    }

    fn schema_fields(name: &str) -> BTreeSet<String> {
        let doc = doc();
        let props = &doc["components"]["schemas"][name]["properties"];
        props
            .as_object()
            .unwrap_or_else(|| panic!("schema {name}"))
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn request_schemas_have_the_fields_of_the_request_types() {
        use tally::api::*;
        let cases = [
            ("CreateRequest", serde_json::to_value(CreateRequest::default())),
            ("SetLimits", serde_json::to_value(SetLimits::default())),
            ("Stop", serde_json::to_value(Stop::default())),
            ("ImportTemplate", serde_json::to_value(ImportTemplate::default())),
            ("CreateTemplate", serde_json::to_value(CreateTemplate::default())),
            ("Attach", serde_json::to_value(Attach { pid: 1 })),
            (
                "FileReadView",
                serde_json::to_value(FileReadView {
                    read: tally::kernel::reads::FileRead {
                        cgroup_id: 1,
                        dev: 2,
                        ino: 3,
                        reads: 4,
                        bytes: 5,
                        last_read_ns: 6,
                    },
                    path: None,
                }),
            ),
            ("CacheStatus", serde_json::to_value(tally::api::CacheStatus::default())),
            ("CacheStats", serde_json::to_value(tally::api::CacheStats::default())),
            ("GcReport", serde_json::to_value(tally::api::GcReport::default())),
            (
                "JoinPlan",
                serde_json::to_value(tally::api::JoinPlan {
                    init_pid: 1,
                    unified: "/sys/fs/cgroup/tally/101".into(),
                    v1_tasks: vec!["/sys/fs/cgroup/pids/tally/101/tasks".into()],
                }),
            ),
            (
                "Status",
                serde_json::to_value(Status {
                    exists: true,
                    mounted: true,
                    running: true,
                    init_pid: Some(1),
                }),
            ),
        ];
        for (name, value) in cases {
            assert_eq!(schema_fields(name), fields(value.unwrap()), "schema {name}");
        }
        let codes = doc()["components"]["schemas"]["ApiError"]["properties"]["code"]["enum"].clone();
        for code in codes.as_array().expect("codes") {
            serde_json::from_value::<ExitCode>(code.clone()).unwrap_or_else(|e| panic!("{code}: {e}"));
        }
    }
}
