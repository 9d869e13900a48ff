//! Prometheus metrics of `ofctl watch` (`GET /metrics`).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabels {
    pub tenant: String,
    pub trigger: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    pub tenant: String,
    pub action: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub tenant: String,
    pub job: String,
    pub result: String,
}

/// Why a pass or job run was skipped (`locked_elsewhere`, `passed_elsewhere`,
/// `lock_unavailable`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    pub tenant: String,
    /// `reconcile` or the job's lock name.
    pub work: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    pub tenant: String,
    pub connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub tenant: String,
    pub kind: String,
}

pub struct Metrics {
    registry: Registry,
    pub passes: Family<PassLabels, Counter>,
    pub changes: Family<ChangeLabels, Counter>,
    pub drift: Family<TenantLabels, Gauge>,
    pub job_runs: Family<JobLabels, Counter>,
    pub connector_restarts: Family<ConnectorLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub skips: Family<SkipLabels, Counter>,
    pub loop_restarts: Family<TenantLabels, Counter>,
    /// How late interval passes started past their due time (all tenants together).
    pub pass_lag: Histogram,
}

/// Buckets of [`Metrics::pass_lag`], in seconds.
const LAG_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The values of the `trigger` and `result` labels of `reconcile_passes`.
const PASS_TRIGGERS: [&str; 4] = ["startup", "interval", "file", "job"];
const PASS_RESULTS: [&str; 3] = ["ok", "error", "skipped"];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ofctl");
        let passes = Family::<PassLabels, Counter>::default();
        let changes = Family::<ChangeLabels, Counter>::default();
        let drift = Family::<TenantLabels, Gauge>::default();
        let job_runs = Family::<JobLabels, Counter>::default();
        let connector_restarts = Family::<ConnectorLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let skips = Family::<SkipLabels, Counter>::default();
        let loop_restarts = Family::<TenantLabels, Counter>::default();
        let pass_lag = Histogram::new(LAG_BUCKETS);
        registry.register("reconcile_passes", "Reconcile passes run", passes.clone());
        registry.register(
            "changes_applied",
            "Changes applied by watch mode",
            changes.clone(),
        );
        registry.register(
            "drift_resources",
            "Resources whose live state differs from the manifest and were not healed",
            drift.clone(),
        );
        registry.register(
            "job_runs",
            "Scheduled job runs (skipped = another replica held the lock)",
            job_runs.clone(),
        );
        registry.register(
            "connector_restarts",
            "Kafka Connect connector restarts",
            connector_restarts.clone(),
        );
        registry.register("errors", "Errors by kind", errors.clone());
        registry.register(
            "skipped_runs",
            "Passes and job runs skipped, by reason (locked_elsewhere, passed_elsewhere, lock_unavailable)",
            skips.clone(),
        );
        registry.register(
            "tenant_loop_restarts",
            "Tenant loops restarted after they died",
            loop_restarts.clone(),
        );
        registry.register(
            "pass_lag_seconds",
            "How late interval passes started past their due time",
            pass_lag.clone(),
        );
        Self {
            registry,
            passes,
            changes,
            drift,
            job_runs,
            connector_restarts,
            errors,
            skips,
            loop_restarts,
            pass_lag,
        }
    }
}

impl Metrics {
    pub fn error(&self, tenant: &str, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                tenant: tenant.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn job_run(&self, tenant: &str, job: &str, result: &str) {
        self.job_runs
            .get_or_create(&JobLabels {
                tenant: tenant.to_string(),
                job: job.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// A job run skipped for `reason`: `job_runs{result="skipped"}` and `skipped_runs{reason}`.
    pub fn job_skipped(&self, tenant: &str, job: &str, reason: &str) {
        self.job_run(tenant, job, "skipped");
        self.skipped(tenant, job, reason);
    }

    pub fn skipped(&self, tenant: &str, work: &str, reason: &str) {
        self.skips
            .get_or_create(&SkipLabels {
                tenant: tenant.to_string(),
                work: work.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Drops a tenant's drift gauge (this replica no longer knows its drift).
    pub fn forget_drift(&self, tenant: &str) {
        self.drift.remove(&TenantLabels {
            tenant: tenant.to_string(),
        });
    }

    /// Drops a removed tenant's series: its drift gauge, pass counters and loop restarts.
    pub fn forget_tenant(&self, tenant: &str) {
        self.forget_drift(tenant);
        self.loop_restarts.remove(&TenantLabels {
            tenant: tenant.to_string(),
        });
        for trigger in PASS_TRIGGERS {
            for result in PASS_RESULTS {
                self.passes.remove(&PassLabels {
                    tenant: tenant.to_string(),
                    trigger: trigger.to_string(),
                    result: result.to_string(),
                });
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
