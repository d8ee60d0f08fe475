//! OpenTelemetry traces, off unless `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) is set.
//!
//! Spans: one per HTTP inference request (`POST /classify`, ...: route, method, status, model and
//! version; its parent is the caller's when the request carries a W3C `traceparent`), and, from the
//! batching worker, for each traced item a `dlserve.queue` span (admission to batch start) and a
//! `dlserve.compute` span (the batch's forward), both children of the request's span, plus one
//! `dlserve.batch` span per batch with its size and a link to every traced request it served (a
//! batch serves several traces, so it is a root of its own, as OpenTelemetry's messaging
//! conventions do for batches).
//!
//! The request's span context travels to the queue in a tokio task-local ([`current`]), so nothing
//! between the middleware and `Batcher::submit` passes it by hand. Finished spans go through a
//! bounded channel (full: the span is dropped and counted, never waited for) to one exporter task,
//! which sends them in batches of up to 512, at least every second, as OTLP/HTTP protobuf
//! (`ExportTraceServiceRequest`) to `<endpoint>/v1/traces`. With tracing off the cost per request is
//! one `Option` check in the middleware and one failed task-local lookup per submit.
//!
//! Sampling follows `OTEL_TRACES_SAMPLER` (`parentbased_always_on` by default; `always_on`,
//! `always_off`, `traceidratio`, `parentbased_traceidratio`, `parentbased_always_off`) with
//! `OTEL_TRACES_SAMPLER_ARG` as the ratio; the service name is `OTEL_SERVICE_NAME` (default
//! `dlserve`).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A span's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanCtx {
    /// The trace it belongs to.
    pub trace_id: [u8; 16],
    /// The span.
    pub span_id: [u8; 8],
}

/// A span attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
}

/// A finished span, on its way to the exporter.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Its identity.
    pub ctx: SpanCtx,
    /// Its parent in the same trace, if any.
    pub parent: Option<[u8; 8]>,
    /// Name (`POST /classify`, `dlserve.batch`, ...).
    pub name: String,
    /// Server (a request) or internal.
    pub server: bool,
    /// Start.
    pub start: SystemTime,
    /// End.
    pub end: SystemTime,
    /// Attributes.
    pub attrs: Vec<(&'static str, Attr)>,
    /// Spans of other traces it relates to (a batch's requests).
    pub links: Vec<SpanCtx>,
    /// Whether it ended in error (a 5xx, a failed batch).
    pub error: bool,
}

/// The request being served, as the batching worker sees it.
#[derive(Clone)]
pub struct Traced {
    /// The request's span.
    pub ctx: SpanCtx,
    /// Where its spans go.
    pub tracer: Arc<Tracer>,
}

tokio::task_local! {
    static CURRENT: Traced;
}

/// The traced request this task is serving, if any.
pub fn current() -> Option<Traced> {
    CURRENT.try_with(Traced::clone).ok()
}

/// Runs `f` as part of the traced request `t`.
pub async fn scope<F: std::future::Future>(t: Traced, f: F) -> F::Output {
    CURRENT.scope(t, f).await
}

/// Which traces are recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Every trace.
    AlwaysOn,
    /// None.
    AlwaysOff,
    /// A fraction of trace ids.
    Ratio(f64),
    /// The caller's decision when there is a `traceparent`, else the inner rule.
    ParentBased(Root),
}

/// The rule for traces that start here under [`Sampler::ParentBased`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    /// Record.
    On,
    /// Do not.
    Off,
    /// A fraction of trace ids.
    Ratio(f64),
}

impl Sampler {
    /// From `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (the specification's names).
    pub fn from_env(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, String> {
        let ratio = || -> Result<f64, String> {
            match arg {
                None => Ok(1.0),
                Some(a) => a
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG '{a}': expected a ratio from 0 to 1")),
            }
        };
        Ok(match name.map(str::trim).unwrap_or("parentbased_always_on") {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::Ratio(ratio()?),
            "parentbased_always_on" | "" => Sampler::ParentBased(Root::On),
            "parentbased_always_off" => Sampler::ParentBased(Root::Off),
            "parentbased_traceidratio" => Sampler::ParentBased(Root::Ratio(ratio()?)),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER '{other}': use always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio"
                ))
            }
        })
    }

    fn sample(&self, trace_id: &[u8; 16], parent_sampled: Option<bool>) -> bool {
        let by_ratio = |r: f64| {
            // The specification's rule: the low 8 bytes of the trace id against the ratio.
            let v = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or([0; 8])) >> 1;
            (v as f64) < r * (u64::MAX >> 1) as f64
        };
        match (self, parent_sampled) {
            (Sampler::AlwaysOn, _) => true,
            (Sampler::AlwaysOff, _) => false,
            (Sampler::Ratio(r), _) => by_ratio(*r),
            (Sampler::ParentBased(_), Some(p)) => p,
            (Sampler::ParentBased(Root::On), None) => true,
            (Sampler::ParentBased(Root::Off), None) => false,
            (Sampler::ParentBased(Root::Ratio(r)), None) => by_ratio(*r),
        }
    }
}

/// A parsed W3C `traceparent`: trace id, parent span id, sampled flag.
pub fn parse_traceparent(v: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let parts: Vec<&str> = v.trim().split('-').collect();
    if parts.len() < 4 || parts[0].len() != 2 || parts[0] == "ff" || (parts[0] == "00" && parts.len() != 4) {
        return None;
    }
    let hex = |s: &str, out: &mut [u8]| -> Option<()> {
        if s.len() != out.len() * 2 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return None;
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(())
    };
    let (mut t, mut s, mut f) = ([0u8; 16], [0u8; 8], [0u8; 1]);
    hex(parts[0], &mut [0u8; 1])?;
    hex(parts[1], &mut t)?;
    hex(parts[2], &mut s)?;
    hex(parts[3], &mut f)?;
    if t == [0; 16] || s == [0; 8] {
        return None;
    }
    Some((t, s, f[0] & 1 == 1))
}

/// The span of one request (REST route or gRPC call) while it runs: [`RequestSpan::run`] makes it
/// the request the batching worker sees, [`RequestSpan::end`] sends it.
pub struct RequestSpan {
    traced: Traced,
    parent: Option<[u8; 8]>,
    start: SystemTime,
}

impl RequestSpan {
    /// Runs `f` (the request's work) as part of this request.
    pub async fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        scope(self.traced.clone(), f).await
    }

    /// Ends the span now, a server span named `name`.
    pub fn end(self, name: String, attrs: Vec<(&'static str, Attr)>, error: bool) {
        self.traced.tracer.emit(SpanRecord {
            ctx: self.traced.ctx,
            parent: self.parent,
            name,
            server: true,
            start: self.start,
            end: SystemTime::now(),
            attrs,
            links: Vec::new(),
            error,
        });
    }
}

/// Where spans go: the sampler and the exporter's channel.
pub struct Tracer {
    tx: mpsc::Sender<SpanRecord>,
    sampler: Sampler,
    dropped: AtomicU64,
}

/// How long the exporter waits at most before sending what it has.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Spans per export request.
const BATCH: usize = 512;
/// Spans waiting for the exporter; beyond, new ones are dropped.
const CAPACITY: usize = 8192;

impl Tracer {
    /// Starts the exporter for `endpoint`: an `http://` URL, to
    /// which `/v1/traces` is added unless `exact` (as `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used).
    pub fn start(endpoint: &str, exact: bool, service: &str, sampler: Sampler) -> Result<Arc<Tracer>, String> {
        let target = Target::parse(endpoint, exact)?;
        let (tx, rx) = mpsc::channel(CAPACITY);
        let service = service.to_string();
        // The exporter has a thread and a runtime of its own: it runs whether or not the caller is
        // inside one (the server is built before its runtime starts), and never takes the serving
        // runtime's time.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("dlserve-otlp".into())
            .spawn(move || rt.block_on(export(rx, target, service)))
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(Tracer { tx, sampler, dropped: AtomicU64::new(0) }))
    }

    /// The span of a request that arrived at `arrived`, if sampled: a child of `traceparent`'s span
    /// when the header is valid, else the root of a new trace.
    pub fn request(self: &Arc<Tracer>, traceparent: Option<&str>, arrived: Instant) -> Option<RequestSpan> {
        let parent = traceparent.and_then(parse_traceparent);
        let trace_id = parent.map_or_else(random_trace_id, |p| p.0);
        if !self.sampler.sample(&trace_id, parent.map(|p| p.2)) {
            return None;
        }
        Some(RequestSpan {
            traced: Traced { ctx: SpanCtx { trace_id, span_id: random_span_id() }, tracer: self.clone() },
            parent: parent.map(|p| p.1),
            start: wall(arrived),
        })
    }

    /// Hands a finished span to the exporter, or drops it when the exporter is behind.
    pub fn emit(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spans dropped because the exporter was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A fresh random trace id (never all zeros).
pub fn random_trace_id() -> [u8; 16] {
    loop {
        let t: [u8; 16] = rand::random();
        if t != [0; 16] {
            return t;
        }
    }
}

/// A fresh random span id (never all zeros).
pub fn random_span_id() -> [u8; 8] {
    loop {
        let s: [u8; 8] = rand::random();
        if s != [0; 8] {
            return s;
        }
    }
}

/// The wall-clock time of `t`, an instant in the past, for span timestamps.
pub fn wall(t: Instant) -> SystemTime {
    SystemTime::now() - t.elapsed()
}

/// An OTLP/HTTP endpoint.
#[derive(Debug, Clone)]
struct Target {
    host_port: String,
    path: String,
}

impl Target {
    fn parse(endpoint: &str, exact: bool) -> Result<Target, String> {
        let rest = endpoint.trim().strip_prefix("http://").ok_or_else(|| {
            format!(
                "--otlp-endpoint '{endpoint}': only http:// collectors are supported (run the OpenTelemetry \
                 Collector beside the server for TLS)"
            )
        })?;
        let (host_port, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host_port.is_empty() {
            return Err(format!("--otlp-endpoint '{endpoint}': no host"));
        }
        let host_port = if host_port.contains(':') { host_port.to_string() } else { format!("{host_port}:80") };
        let path = if exact && !path.is_empty() {
            path.to_string()
        } else {
            format!("{}/v1/traces", path.trim_end_matches('/'))
        };
        Ok(Target { host_port, path })
    }
}

async fn export(mut rx: mpsc::Receiver<SpanRecord>, target: Target, service: String) {
    let mut failures = 0u64;
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut spans = vec![first];
        let until = tokio::time::Instant::now() + FLUSH_EVERY;
        while spans.len() < BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(s)) => spans.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let n = spans.len();
        let body = encode(&service, spans);
        match tokio::time::timeout(Duration::from_secs(10), post(&target, &body)).await {
            Ok(Ok(())) => failures = 0,
            Ok(Err(e)) => {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(endpoint = %target.host_port, spans = n, error = %e, failures, "OTLP export failed");
                }
            }
            Err(_) => {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(endpoint = %target.host_port, spans = n, failures, "OTLP export timed out after 10 s");
                }
            }
        }
    }
}

/// One `ExportTraceServiceRequest` for `spans`, protobuf-encoded.
pub fn encode(service: &str, spans: Vec<SpanRecord>) -> Vec<u8> {
    let nanos = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let kv = |k: &str, v: Attr| KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(match v {
                Attr::Str(s) => any_value::Value::StringValue(s),
                Attr::Int(i) => any_value::Value::IntValue(i),
            }),
        }),
        ..Default::default()
    };
    let spans = spans
        .into_iter()
        .map(|s| Span {
            trace_id: s.ctx.trace_id.to_vec(),
            span_id: s.ctx.span_id.to_vec(),
            parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: s.name,
            kind: if s.server { span::SpanKind::Server as i32 } else { span::SpanKind::Internal as i32 },
            start_time_unix_nano: nanos(s.start),
            end_time_unix_nano: nanos(s.end),
            attributes: s.attrs.into_iter().map(|(k, v)| kv(k, v)).collect(),
            links: s
                .links
                .into_iter()
                .map(|l| span::Link {
                    trace_id: l.trace_id.to_vec(),
                    span_id: l.span_id.to_vec(),
                    ..Default::default()
                })
                .collect(),
            status: s.error.then(|| Status { code: 2, ..Default::default() }),
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", Attr::Str(service.to_string())),
                    kv("service.version", Attr::Str(env!("CARGO_PKG_VERSION").to_string())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "dlserve".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    req.encode_to_vec()
}

/// POSTs one export over a fresh HTTP/1.1 connection and checks for a 2xx answer.
async fn post(target: &Target, body: &[u8]) -> Result<(), String> {
    let mut sock = tokio::net::TcpStream::connect(&target.host_port).await.map_err(|e| e.to_string())?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        target.host_port,
        body.len()
    );
    sock.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    sock.write_all(body).await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = sock.read(&mut buf).await.map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&buf[..n]);
    let status = line.split(' ').nth(1).unwrap_or("");
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(format!("collector answered {}", line.lines().next().unwrap_or("nothing")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_as_w3c_says() {
        let (t, s, sampled) = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t[0], 0x4b);
        assert_eq!(s[7], 0xb7);
        assert!(sampled);
        assert!(!parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().2);
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // A later version may add fields.
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what").is_some());
    }

    #[test]
    fn samplers_follow_the_specification() {
        let t = random_trace_id();
        assert_eq!(Sampler::from_env(None, None).unwrap(), Sampler::ParentBased(Root::On));
        assert!(Sampler::from_env(Some("always_on"), None).unwrap().sample(&t, Some(false)));
        assert!(!Sampler::from_env(Some("always_off"), None).unwrap().sample(&t, Some(true)));
        let pb = Sampler::from_env(Some("parentbased_always_on"), None).unwrap();
        assert!(!pb.sample(&t, Some(false)) && pb.sample(&t, Some(true)) && pb.sample(&t, None));
        assert!(!Sampler::Ratio(0.0).sample(&t, None));
        assert!(Sampler::Ratio(1.0).sample(&t, None));
        let half = Sampler::from_env(Some("traceidratio"), Some("0.5")).unwrap();
        let kept = (0..4000).filter(|_| half.sample(&random_trace_id(), None)).count();
        assert!((1700..2300).contains(&kept), "{kept} of 4000 at ratio 0.5");
        assert!(Sampler::from_env(Some("traceidratio"), Some("2")).is_err());
        assert!(Sampler::from_env(Some("jaeger_remote"), None).is_err());
    }

    #[test]
    fn endpoints_get_the_traces_path() {
        let t = Target::parse("http://collector:4318", false).unwrap();
        assert_eq!((t.host_port.as_str(), t.path.as_str()), ("collector:4318", "/v1/traces"));
        let t = Target::parse("http://c/otlp/", false).unwrap();
        assert_eq!((t.host_port.as_str(), t.path.as_str()), ("c:80", "/otlp/v1/traces"));
        let t = Target::parse("http://c:4318/custom", true).unwrap();
        assert_eq!(t.path, "/custom");
        assert!(Target::parse("https://c:4318", false).unwrap_err().contains("only http://"));
    }

    #[test]
    fn spans_encode_as_otlp() {
        let ctx = SpanCtx { trace_id: [1; 16], span_id: [2; 8] };
        let now = SystemTime::now();
        let rec = SpanRecord {
            ctx,
            parent: Some([3; 8]),
            name: "POST /classify".into(),
            server: true,
            start: now,
            end: now + Duration::from_millis(5),
            attrs: vec![("http.response.status_code", Attr::Int(200))],
            links: vec![SpanCtx { trace_id: [4; 16], span_id: [5; 8] }],
            error: false,
        };
        let bytes = encode("svc", vec![rec]);
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let s = &back.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.name, "POST /classify");
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 5_000_000);
        assert_eq!(s.links[0].span_id, vec![5; 8]);
        assert_eq!(s.kind, span::SpanKind::Server as i32);
    }
}
