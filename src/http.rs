//! The HTTP API (axum): campaign state, serving, models, health, readiness, metrics and the
//! dashboard.
//!
//! One router serves every route ([`app`]), unless the pipeline sets `[api] admin_listen`:
//! then the public listener serves [`Listener::Public`]'s routes (serving, billing notices,
//! campaign reads, health, the API reference) and the admin listener
//! [`Listener::Admin`]'s (dashboard, metrics, models, campaign reads, health); each answers
//! 404 for the other's.
//!
//! Campaign reads (`GET /v1/campaigns...`) are open while the pipeline has neither an admin
//! token nor an advertiser token; with either, they need `Authorization: Bearer TOKEN`: the
//! admin token reads every campaign, an advertiser's token (`[api.advertiser_tokens]`) only
//! that advertiser's (403 on another's), and no or an unknown token is refused (401).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use serde_json::json;

use crate::billing_notice::{BillingNotices, Notice, NoticeError};
use crate::dashboard::{asset, History};
use crate::health::Health;
use crate::live::LiveState;
use crate::metrics::Metrics;
use crate::serving::{Answer, Serving};
use adstream_operators::ranker::registry::RegistryError;
use adstream_operators::ranker::scoring::ModelSlot;
use adstream_operators::ranker::trainer::{Command, TrainerControl, TrainerError};
use adstream_operators::request::parse_request;
use adstream_operators::serve::brand_safety::seat_allowed;
use adstream_operators::serve::explain::Nbr;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;

/// What handlers read.
#[derive(Clone)]
pub struct AppState {
    /// Live campaign state.
    pub live: Arc<LiveState>,
    /// Metrics.
    pub metrics: Metrics,
    /// Request queues of the serving operators (absent in tests of the other routes).
    pub serving: Option<Arc<Serving>>,
    /// The model serving in this process.
    pub models: Arc<ModelSlot>,
    /// The trainer and its registry (in the process of worker 0 only).
    pub trainer: Option<Arc<TrainerControl>>,
    /// What the dashboard plots.
    pub history: Arc<History>,
    /// When set, admin routes need `Authorization: Bearer <token>`.
    pub admin_token: Option<Arc<str>>,
    /// The workers' heartbeats, behind `GET /healthz`.
    pub health: Arc<Health>,
    /// Turns fired billing notices into impressions (absent in tests of the other routes).
    pub billing: Option<Arc<BillingNotices>>,
    /// (advertiser id, read token): each reads only its advertiser's campaigns.
    pub advertiser_tokens: Arc<[(String, String)]>,
    /// Export per-campaign series at `GET /metrics` (`[metrics] per_campaign`).
    pub per_campaign_metrics: bool,
}

/// The bearer token of a request (empty without one).
fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// Whether `given` is `expected`, compared in time independent of where the first difference
/// is.
fn same_token(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Who may read campaigns.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reader {
    /// Every campaign: no token is configured, or the admin token was given.
    All,
    /// Only this advertiser's campaigns.
    Advertiser(String),
}

impl Reader {
    /// Whether this reader may see a campaign of `advertiser` (`None`: no longer defined).
    fn may_read(&self, advertiser: Option<&str>) -> bool {
        match self {
            Reader::All => true,
            Reader::Advertiser(own) => advertiser == Some(own.as_str()),
        }
    }
}

/// Who reads: open while no token is configured; else the admin token reads all, an
/// advertiser's token its own campaigns, and anything else is refused (401).
fn authorize_read(state: &AppState, headers: &HeaderMap) -> Result<Reader, ApiError> {
    if state.admin_token.is_none() && state.advertiser_tokens.is_empty() {
        return Ok(Reader::All);
    }
    let given = bearer(headers);
    if given.is_empty() {
        return Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "campaign reads need `Authorization: Bearer <advertiser or admin token>`"
                .into(),
        });
    }
    if state
        .admin_token
        .as_deref()
        .is_some_and(|admin| same_token(given, admin))
    {
        return Ok(Reader::All);
    }
    // Every token is compared, so the time taken does not tell which one nearly matched.
    let mut found = None;
    for (advertiser, token) in state.advertiser_tokens.iter() {
        if same_token(given, token) {
            found = Some(advertiser);
        }
    }
    found
        .map(|advertiser| Reader::Advertiser(advertiser.clone()))
        .ok_or_else(|| ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "the bearer token is neither an advertiser's read token nor the admin token"
                .into(),
        })
}

/// Refuses an admin request without the pipeline's bearer token (401), when one is set.
fn authorize_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = state.admin_token.as_deref() else {
        return Ok(());
    };
    let given = bearer(headers);
    if same_token(given, expected) {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: if given.is_empty() {
                "this route needs `Authorization: Bearer <admin token>`".into()
            } else {
                "the bearer token is not the pipeline's admin token".into()
            },
        })
    }
}

/// One error type for every handler: a status and a JSON body naming what is wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Every route of the API as (method, path), in the form the OpenAPI document
/// (`GET /openapi.json`) lists them; [`app`] serves exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/assets/{file}"),
    ("get", "/v1/dashboard"),
    ("get", "/v1/campaigns/{id}"),
    ("get", "/v1/campaigns"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("post", "/v1/openrtb"),
    ("get", "/v1/billing"),
    ("get", "/v1/models"),
    ("post", "/v1/models/{version}/promote"),
    ("post", "/v1/models/resume"),
    ("get", "/openapi.json"),
];

/// The API reference, served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Every route: the one listener of a pipeline without `[api] admin_listen`.
    All,
    /// Serving, billing notices, campaign reads, health and the API reference.
    Public,
    /// Dashboard, metrics, models, campaign reads and health.
    Admin,
}

/// Routes of the admin listener only (when there is one).
pub const ADMIN_ONLY: &[&str] = &[
    "/",
    "/assets/{file}",
    "/v1/dashboard",
    "/metrics",
    "/v1/models",
    "/v1/models/{version}/promote",
    "/v1/models/resume",
];

/// Routes of the public listener only (when there is an admin listener).
pub const PUBLIC_ONLY: &[&str] = &["/v1/openrtb", "/v1/billing", "/openapi.json"];

impl Listener {
    /// Whether this listener serves `path` (a path of [`ROUTES`]).
    pub fn serves(self, path: &str) -> bool {
        match self {
            Listener::All => true,
            Listener::Public => !ADMIN_ONLY.contains(&path),
            Listener::Admin => !PUBLIC_ONLY.contains(&path),
        }
    }
}

/// The router of a pipeline's only listener: every route.
pub fn app(state: AppState) -> Router {
    router(state, Listener::All)
}

/// The router of `listener`: the routes it serves; any other path is 404.
pub fn router(state: AppState, listener: Listener) -> Router {
    let routes: [(&str, MethodRouter<Arc<AppState>>); 14] = [
        ("/", get(|| async { asset("index.html") })),
        (
            "/assets/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        ),
        ("/v1/dashboard", get(dashboard)),
        ("/v1/campaigns/{id}", get(campaign)),
        ("/v1/campaigns", get(campaigns)),
        ("/healthz", get(healthz)),
        ("/readyz", get(readyz)),
        ("/metrics", get(metrics)),
        ("/v1/openrtb", post(openrtb)),
        ("/v1/billing", get(billing)),
        (
            "/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    OPENAPI,
                )
            }),
        ),
        ("/v1/models", get(models)),
        ("/v1/models/{version}/promote", post(promote)),
        ("/v1/models/resume", post(resume)),
    ];
    let mut router = Router::new();
    for (path, handler) in routes {
        if listener.serves(path) {
            router = router.route(path, handler);
        }
    }
    router
        .layer(DefaultBodyLimit::max(64 * 1024))
        // One handle per request, not a copy of every field (and metric handle) of the state.
        .with_state(Arc::new(state))
}

/// Query of `GET /v1/campaigns/{id}`.
#[derive(Debug, serde::Deserialize)]
struct DayQuery {
    /// A budget day (`YYYY-MM-DD`) other than today.
    day: Option<String>,
}

async fn campaign(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<DayQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let reader = authorize_read(&state, &headers)?;
    adstream_operators::events::check_id(&id).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("path `id`: {e}"),
    })?;
    if reader != Reader::All && state.live.status(&id).is_some() {
        let owner = state.live.advertiser_of(&id);
        if !reader.may_read(owner.as_deref()) {
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                message: format!("campaign {id:?} is not this advertiser's"),
            });
        }
    }
    let found = match query.day {
        None => state.live.status(&id),
        Some(day) => {
            let day = day.parse::<chrono::NaiveDate>().map_err(|e| ApiError {
                status: StatusCode::BAD_REQUEST,
                message: format!("query `day`: {day:?} is not a date YYYY-MM-DD ({e})"),
            })?;
            state.live.status_on(&id, day)
        }
    };
    let status = found.ok_or_else(|| ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("unknown campaign {id:?}"),
    })?;
    let mut body = serde_json::to_value(&status).map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: e.to_string(),
    })?;
    if body.get("pacing").is_none() {
        // Defined, but the pacing operator has not reported on today yet.
        body["pacing"] = json!({ "mode": "pending" });
    }
    Ok(Json(body).into_response())
}

async fn openrtb(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let received = std::time::Instant::now();
    let outcome = |o: &str| {
        state.metrics.requests.with_label_values(&[o]).inc();
        state
            .metrics
            .serving_latency_seconds
            .observe(received.elapsed().as_secs_f64());
    };
    let mut request = parse_request(&body).map_err(|e| {
        outcome("bad_request");
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: e.to_string(),
        }
    })?;
    if request.debug {
        authorize_admin(&state, &headers).inspect_err(|_| outcome("bad_request"))?;
    }
    let serving = state.serving.as_ref().ok_or_else(|| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "serving is not running".into(),
    })?;
    let settings = &serving.settings;
    let no_bid =
        |nbr: Nbr, debug: Option<&adstream_operators::serve::operator::ServeOutcome>, id: &str| {
            outcome("no_fill");
            state
                .metrics
                .no_bids
                .with_label_values(&[&nbr.0.to_string()])
                .inc();
            if settings.nbr_body || debug.is_some() {
                Json(Serving::no_bid_response(id, nbr, debug)).into_response()
            } else {
                let mut response = StatusCode::NO_CONTENT.into_response();
                response
                    .headers_mut()
                    .insert("x-openrtb-nbr", axum::http::HeaderValue::from(nbr.0));
                response
            }
        };
    if !seat_allowed(&settings.seat, &request.blocks) {
        return Ok(no_bid(Nbr::SEAT_BLOCKED, None, &request.id));
    }
    let Some((currency, rate)) = settings.rates.response_currency(&request) else {
        return Ok(no_bid(Nbr::UNSUPPORTED_CURRENCY, None, &request.id));
    };
    for (_, reason) in settings.rates.price_floors(&mut request) {
        state
            .metrics
            .skipped_imps
            .with_label_values(&[reason.as_str()])
            .inc();
    }
    if request.slots.is_empty() {
        return Ok(no_bid(Nbr::UNSUPPORTED_CURRENCY, None, &request.id));
    }
    // What the answer needs of the request once a worker has it.
    let (id, user_id) = (request.id.clone(), request.user_id.clone());
    match serving.submit(request, received).await {
        Answer::Filled(filled) => {
            outcome("filled");
            let response = serving.response(&id, user_id.as_deref(), &filled, (&currency, rate));
            Ok(Json(response).into_response())
        }
        Answer::NoFill(nbr, debug) => Ok(no_bid(nbr, debug.as_ref(), &id)),
        Answer::Overloaded => {
            outcome("overloaded");
            state
                .metrics
                .no_bids
                .with_label_values(&[&Nbr::TECHNICAL_ERROR.0.to_string()])
                .inc();
            Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "overloaded: every serving queue is full".into(),
            })
        }
    }
}

/// Query of `GET /v1/billing`.
#[derive(Debug, serde::Deserialize)]
struct NoticeQuery {
    /// The win's billing token.
    token: Option<String>,
    /// The viewer's id, as the request gave it.
    u: Option<String>,
}

async fn billing(
    State(state): State<Arc<AppState>>,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, ApiError> {
    let count = |o: &str| state.metrics.billing_notices.with_label_values(&[o]).inc();
    let notices = state.billing.as_ref().ok_or_else(|| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "billing notices are not running".into(),
    })?;
    let token = query.token.unwrap_or_default();
    match notices.fire(&token, query.u.as_deref()).await {
        Ok(Notice::Published) => {
            count("published");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Ok(Notice::Repeat) => {
            count("repeat");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(e @ NoticeError::Publish(_)) => {
            count("failed");
            Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
            })
        }
        Err(e) => {
            count("refused");
            Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                message: e.to_string(),
            })
        }
    }
}

/// `GET /v1/campaigns`: every campaign the reader may read.
async fn campaigns(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let reader = authorize_read(&state, &headers)?;
    let mut all = state.live.all();
    if reader != Reader::All {
        all.retain(|c| reader.may_read(state.live.advertiser_of(&c.campaign_id).as_deref()));
    }
    Ok(Json(json!({ "campaigns": all })))
}

/// Liveness: 503 naming a worker that has stopped stepping (a worker that failed has ended the
/// process already: see `crate::fail_stop`).
async fn healthz(State(state): State<Arc<AppState>>) -> (StatusCode, String) {
    match state.health.check(std::time::Instant::now()) {
        Ok(()) => (StatusCode::OK, "ok".into()),
        Err(stalled) => (StatusCode::SERVICE_UNAVAILABLE, stalled),
    }
}

/// `GET /readyz`: 200 or 503 with `{"ready": bool, "reasons": [{"reason": ...}]}`.
async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<crate::live::Readiness>) {
    let readiness = state.live.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}

/// `GET /v1/models`: the live version, training status and every version with its metrics.
async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let live = state.models.current();
    let serving = live
        .as_ref()
        .map_or_else(|| "prior".to_string(), |m| m.name.clone());
    match &state.trainer {
        Some(trainer) => {
            let status = trainer.status.lock().map(|s| s.clone()).unwrap_or_default();
            let dropped = trainer.dropped.load(std::sync::atomic::Ordering::Relaxed);
            Json(json!({
                "serving": serving,
                "training": {
                    "device": status.device,
                    "examples": status.examples,
                    "examples_dropped": dropped,
                    "examples_per_second": status.examples_per_second,
                    "steps": status.steps,
                    "errors": status.errors,
                    "click": status.click,
                    "conversion": status.conversion,
                },
                "versions": status.versions,
                "pinned": status.pinned,
            }))
        }
        // Another process trains: show what this one serves.
        None => Json(json!({
            "serving": serving,
            "training": null,
            "versions": live.map(|m| vec![m.meta.clone()]).unwrap_or_default(),
        })),
    }
}

/// `POST /v1/models/{version}/promote`: makes a version live (`3` or `v3`) and pins serving to
/// it: trained versions keep being judged, but none goes live until `POST /v1/models/resume`.
async fn promote(
    State(state): State<Arc<AppState>>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_admin(&state, &headers)?;
    let number = version
        .strip_prefix('v')
        .unwrap_or(&version)
        .parse::<u64>()
        .map_err(|_| ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("path `version`: {version:?} is not a version such as 3 or v3"),
        })?;
    let meta = ask_trainer(&state, |reply| Command::Promote {
        version: number,
        reply,
    })
    .await?;
    Ok(Json(meta).into_response())
}

/// `POST /v1/models/resume`: ends a promotion's pin; the next version that passes the guards
/// goes live.
async fn resume(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_admin(&state, &headers)?;
    ask_trainer(&state, |reply| Command::Resume { reply }).await?;
    Ok(Json(json!({"pinned": false})).into_response())
}

/// Sends a command to this process's trainer and waits (up to 30 s) for its answer.
async fn ask_trainer<T: Send + 'static>(
    state: &AppState,
    command: impl FnOnce(std::sync::mpsc::Sender<Result<T, TrainerError>>) -> Command,
) -> Result<T, ApiError> {
    let trainer = state.trainer.as_ref().ok_or_else(|| ApiError {
        status: StatusCode::CONFLICT,
        message: "models are trained and promoted in the process of worker 0 (process 0); \
                  send the request to its API"
            .into(),
    })?;
    let (reply, answer) = std::sync::mpsc::channel();
    trainer
        .commands
        .send(command(reply))
        .map_err(|_| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the trainer has stopped".into(),
        })?;
    let answer = tokio::task::spawn_blocking(move || {
        answer.recv_timeout(std::time::Duration::from_secs(30))
    })
    .await
    .map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: e.to_string(),
    })?;
    match answer {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            let status = match &e {
                TrainerError::Registry(RegistryError::Unknown(_)) => StatusCode::NOT_FOUND,
                TrainerError::Registry(RegistryError::Refused(..)) => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(ApiError {
                status,
                message: e.to_string(),
            })
        }
        Err(_) => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the trainer did not answer within 30 s".into(),
        }),
    }
}

async fn dashboard(State(state): State<Arc<AppState>>) -> Response {
    (
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(state.history.document()),
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> String {
    state.metrics.campaigns.set(state.live.campaigns() as i64);
    let last = state.metrics.last_checkpoint_timestamp_seconds.get();
    if last > 0.0 {
        let now = adstream_operators::time::EventTime::now().millis() as f64 / 1000.0;
        state
            .metrics
            .checkpoint_age_seconds
            .set((now - last).max(0.0));
    }
    // Campaigns come and go: the gauge holds exactly today's live ones (per campaign only when
    // the pipeline asks for it: one series each).
    state.metrics.budget_utilisation.reset();
    // One pass over the catalog without building statuses: the worker that updates the live
    // view waits while it runs.
    let mut spent = 0;
    state.live.visit_spend_today(|id, spend, budget| {
        if budget > 0 {
            if spend >= budget {
                spent += 1;
            }
            if state.per_campaign_metrics {
                state
                    .metrics
                    .budget_utilisation
                    .with_label_values(&[id])
                    .set(spend as f64 / budget as f64);
            }
        }
    });
    state.metrics.campaigns_budget_spent.set(spent);
    if let Some(trainer) = &state.trainer {
        if let Ok(status) = trainer.status.lock() {
            let dropped = trainer.dropped.load(std::sync::atomic::Ordering::Relaxed);
            state.metrics.observe_trainer(&status, dropped);
        }
    }
    state.metrics.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use adstream_operators::records::LedgerState;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// The state of an API with no serving, no trainer and `live`, behind `admin_token`.
    fn state(live: Arc<LiveState>, admin_token: Option<Arc<str>>) -> AppState {
        AppState {
            live,
            metrics: Metrics::new(),
            serving: None,
            models: Arc::default(),
            trainer: None,
            history: Arc::new(History::new(std::time::Duration::from_secs(2))),
            admin_token,
            health: Arc::default(),
            billing: None,
            advertiser_tokens: Arc::from(Vec::new()),
            per_campaign_metrics: false,
        }
    }
    use tower::ServiceExt;

    async fn get_json(app: Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let resp = app
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The OpenAPI document lists exactly the routes the router serves, each with the method
    /// it is served with, and every schema it references exists.
    #[tokio::test]
    async fn the_openapi_document_matches_the_handlers() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .expect("operations")
                    .keys()
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        documented.sort();
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
        // Every listed route reaches a handler with its method: not 404 (no route) and not
        // 405 (another method). Path parameters get a sample value.
        for (method, path) in ROUTES {
            let uri = path
                .replace("{file}", "app.js")
                .replace("{id}", "c1")
                .replace("{version}", "v1");
            let request = Request::builder()
                .method(method.to_ascii_uppercase().as_str())
                .uri(&uri)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let status = app(state(Arc::default(), None))
                .oneshot(request)
                .await
                .unwrap()
                .status();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            let unknown_id = *path == "/v1/campaigns/{id}" || path.contains("{version}");
            if !unknown_id && !path.contains("{file}") {
                assert_ne!(status, StatusCode::NOT_FOUND, "{method} {path}");
            }
        }
        // An undocumented route is not served.
        let (status, _) = get_json(app(state(Arc::default(), None)), "/v1/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Every $ref resolves.
        let text = OPENAPI;
        for part in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "unresolved schema {name}"
            );
        }
        let (status, served_doc) =
            get_json(app(state(Arc::default(), None)), "/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(served_doc, doc);
    }

    #[tokio::test]
    async fn debug_requests_need_the_admin_token_and_notices_need_a_token() {
        let app_with = || app(state(Arc::default(), Some(Arc::from("sesame"))));
        let body = r#"{"id":"r","imp":[{"id":"1"}],"ext":{"debug":true}}"#;
        let post = |auth: Option<&str>| {
            let mut b = Request::post("/v1/openrtb").header("content-type", "application/json");
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(Body::from(body)).unwrap()
        };
        let status = app_with().oneshot(post(None)).await.unwrap().status();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // With the token it passes the check (and meets no serving in this test: 503).
        let status = app_with()
            .oneshot(post(Some("Bearer sesame")))
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn campaign_state_and_404() {
        let live = Arc::new(LiveState::default());
        live.define_for_test("c1", "a", 1000, "cpc", 5);
        let app = app(state(live, None));
        let (status, body) = get_json(app.clone(), "/v1/campaigns/c1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["budget_micros"], 1000);
        assert_eq!(body["remaining_micros"], 1000);
        let (status, body) = get_json(app.clone(), "/v1/campaigns/c1?day=tuesday").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().contains("day"));
        for bad in ["a%00b", "a%0Ab", "%7F", &"x".repeat(257)] {
            let (status, body) = get_json(app.clone(), &format!("/v1/campaigns/{bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(
                body["error"].as_str().unwrap().contains("path `id`"),
                "{body}"
            );
        }
        let (status, body) = get_json(app.clone(), "/v1/campaigns/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().unwrap().contains("nope"));
        let resp = app
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn openrtb_refuses_bad_bodies_before_queueing() {
        let app = app(state(Arc::new(LiveState::default()), None));
        let resp = app
            .clone()
            .oneshot(
                Request::post("/v1/openrtb")
                    .body(Body::from(r#"{"id":"r","imp":[{"id":"1"}],"tmax":-4}"#))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&bytes).contains("tmax"));
    }

    /// Not ready until every source of the process has caught up with its partitions.
    #[tokio::test]
    async fn readiness_waits_for_every_source() {
        let live = Arc::new(LiveState::default());
        let app = app(state(live.clone(), None));
        let status = |app: Router| async move {
            app.oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        };
        assert_eq!(
            status(app.clone()).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "no source yet"
        );
        let (a, b) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        live.track_source(a.clone());
        live.track_source(b.clone());
        a.store(true, Ordering::Relaxed);
        assert_eq!(
            status(app.clone()).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "one behind"
        );
        b.store(true, Ordering::Relaxed);
        assert_eq!(status(app.clone()).await, StatusCode::OK);
        assert_eq!(status(app.clone()).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn promote_needs_the_admin_token_when_one_is_set() {
        let app = app(state(
            Arc::new(LiveState::default()),
            Some(Arc::from("s3cret-token")),
        ));
        let promote = |auth: Option<&str>| {
            let mut req = Request::post("/v1/models/v1/promote");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            app.clone().oneshot(req.body(Body::empty()).unwrap())
        };
        let resp = promote(None).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        for wrong in [
            "Bearer nope",
            "Bearer s3cret-tokem",
            "Basic s3cret-token",
            "s3cret-token",
        ] {
            assert_eq!(
                promote(Some(wrong)).await.unwrap().status(),
                StatusCode::UNAUTHORIZED,
                "{wrong}"
            );
        }
        // With the token the request goes through to the promotion (no trainer here: not 401).
        let resp = promote(Some("Bearer s3cret-token")).await.unwrap();
        assert_ne!(resp.status(), StatusCode::UNAUTHORIZED);
        // Read-only routes stay open.
        let (status, _) = get_json(app.clone(), "/v1/models").await;
        assert_eq!(status, StatusCode::OK);
    }

    /// Two campaigns: `c1` of advertiser `adv-a`, `c2` of `adv-b`.
    fn two_advertisers() -> Arc<LiveState> {
        let live = Arc::new(LiveState::default());
        for (id, advertiser) in [("c1", "adv-a"), ("c2", "adv-b")] {
            live.define_for_test(id, advertiser, 1000, "cpc", 5);
        }
        live
    }

    async fn get_with(app: Router, uri: &str, token: Option<&str>) -> (StatusCode, Response) {
        let mut request = Request::get(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        (response.status(), response)
    }

    /// With an admin listener, each listener answers 404 for the other's routes; campaign
    /// reads and health are on both; every documented route is served by one of them.
    #[tokio::test]
    async fn the_admin_routes_are_apart_from_the_public_ones() {
        let live = two_advertisers();
        let public = router(state(live.clone(), None), Listener::Public);
        let admin = router(state(live.clone(), None), Listener::Admin);
        for path in [
            "/metrics",
            "/v1/models",
            "/v1/dashboard",
            "/",
            "/assets/app.js",
        ] {
            let (status, _) = get_with(public.clone(), path, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "public {path}");
        }
        for path in [
            "/metrics",
            "/v1/models",
            "/v1/dashboard",
            "/",
            "/v1/campaigns/c1",
        ] {
            let (status, _) = get_with(admin.clone(), path, None).await;
            assert_eq!(status, StatusCode::OK, "admin {path}");
        }
        for path in [
            "/v1/campaigns",
            "/v1/campaigns/c1",
            "/healthz",
            "/openapi.json",
        ] {
            let (status, _) = get_with(public.clone(), path, None).await;
            assert_eq!(status, StatusCode::OK, "public {path}");
        }
        // Not ready (no source), but served on both.
        for app in [public.clone(), admin.clone()] {
            let (status, _) = get_with(app, "/readyz", None).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        }
        let promote = Request::post("/v1/models/v1/promote")
            .body(Body::empty())
            .unwrap();
        let status = public.clone().oneshot(promote).await.unwrap().status();
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "promote on the public listener"
        );
        let bid = Request::post("/v1/openrtb")
            .body(Body::from(r#"{"id":"r","imp":[{"id":"1"}]}"#))
            .unwrap();
        let status = admin.clone().oneshot(bid).await.unwrap().status();
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "serving on the admin listener"
        );
        for (_, path) in ROUTES {
            assert!(
                Listener::Public.serves(path) || Listener::Admin.serves(path),
                "{path} is served by neither listener"
            );
            assert!(Listener::All.serves(path));
        }
        for path in ADMIN_ONLY.iter().chain(PUBLIC_ONLY) {
            assert!(
                ROUTES.iter().any(|(_, p)| p == path),
                "{path} is not a route"
            );
        }
    }

    /// Campaign reads with tokens: own 200, another advertiser's 403, none or unknown 401,
    /// the admin token reads all; the list holds only the reader's campaigns.
    #[tokio::test]
    async fn advertiser_tokens_read_only_their_own_campaigns() {
        let mut with_tokens = state(two_advertisers(), Some(Arc::from("admin-token-0123456789")));
        with_tokens.advertiser_tokens = Arc::from(vec![
            ("adv-a".to_string(), "token-of-adv-a-0123".to_string()),
            ("adv-b".to_string(), "token-of-adv-b-0123".to_string()),
        ]);
        let app = router(with_tokens, Listener::Public);
        let status = |uri: &'static str, token: Option<&'static str>| {
            let app = app.clone();
            async move { get_with(app, uri, token).await.0 }
        };
        let a = Some("token-of-adv-a-0123");
        let admin = Some("admin-token-0123456789");
        assert_eq!(status("/v1/campaigns/c1", a).await, StatusCode::OK);
        assert_eq!(status("/v1/campaigns/c2", a).await, StatusCode::FORBIDDEN);
        assert_eq!(
            status("/v1/campaigns/c2", Some("token-of-adv-b-0123")).await,
            StatusCode::OK
        );
        assert_eq!(status("/v1/campaigns/nope", a).await, StatusCode::NOT_FOUND);
        for uri in ["/v1/campaigns/c1", "/v1/campaigns"] {
            let (code, response) = get_with(app.clone(), uri, None).await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{uri}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            for wrong in ["token-of-adv-a-0124", "nope", "admin-token-012345678"] {
                assert_eq!(
                    status(uri, Some(wrong)).await,
                    StatusCode::UNAUTHORIZED,
                    "{uri} {wrong}"
                );
            }
        }
        assert_eq!(status("/v1/campaigns/c1", admin).await, StatusCode::OK);
        assert_eq!(status("/v1/campaigns/c2", admin).await, StatusCode::OK);
        let listed = |token: Option<&'static str>| {
            let app = app.clone();
            async move {
                let (code, response) = get_with(app, "/v1/campaigns", token).await;
                assert_eq!(code, StatusCode::OK);
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                body["campaigns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["campaign_id"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(listed(a).await, ["c1"]);
        assert_eq!(listed(admin).await, ["c1", "c2"]);
        // An admin token alone closes the reads too; no token at all leaves them open.
        let admin_only = router(
            state(two_advertisers(), Some(Arc::from("admin-token-0123456789"))),
            Listener::All,
        );
        assert_eq!(
            get_with(admin_only, "/v1/campaigns/c1", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        let open = router(state(two_advertisers(), None), Listener::All);
        assert_eq!(
            get_with(open, "/v1/campaigns/c2", None).await.0,
            StatusCode::OK
        );
    }

    /// Per-campaign series only when asked for; the count of spent campaigns either way.
    #[tokio::test]
    async fn per_campaign_metrics_are_opt_in() {
        let scrape = |per_campaign: bool| async move {
            let mut s = state(two_advertisers(), None);
            s.per_campaign_metrics = per_campaign;
            let (_, response) = get_with(app(s), "/metrics", None).await;
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        let text = scrape(false).await;
        assert!(!text.contains("adstream_budget_utilisation{"), "{text}");
        assert!(text.contains("adstream_campaigns_budget_spent 0"), "{text}");
        assert!(text.contains("adstream_build_info{"), "{text}");
        let text = scrape(true).await;
        assert!(
            text.contains("adstream_budget_utilisation{campaign=\"c1\"} 0"),
            "{text}"
        );
        // A campaign that spent its budget today counts.
        let live = two_advertisers();
        live.apply(&LedgerState::Spend(adstream_operators::records::DaySpend {
            campaign_id: "c2".into(),
            day: adstream_operators::time::day::budget_day(
                adstream_operators::time::EventTime::now(),
                chrono_tz::UTC,
            ),
            spend_micros: 1_000,
            overdelivery_micros: 0,
        }));
        let mut s = state(live, None);
        s.per_campaign_metrics = true;
        let (_, response) = get_with(app(s), "/metrics", None).await;
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(text.contains("adstream_campaigns_budget_spent 1"), "{text}");
        assert!(
            text.contains("adstream_budget_utilisation{campaign=\"c2\"} 1"),
            "{text}"
        );
    }
}
