//! API-key stats: the gateway's per-key counters move from Redis hashes
//! `of:{<tenant>}:stats:<keyId>` into Mongo `api_key_stats` (openframe.md §11).
//!
//! The platform read the hash, saved, then deleted it: increments landing in between were lost,
//! and a crash after the save counted them twice. Here each key is handed off atomically with
//! `RENAME` to a processing key that carries a batch id; the gateway's next `HINCRBY` starts a
//! fresh hash, so nothing is lost. The Mongo update only applies when the document's
//! `lastSyncBatch` differs from the batch, so replaying a batch after a crash (the processing
//! key survives until the update is done) counts nothing twice. Leftover processing keys are
//! finished before any new hand-off, so a key never has two batches in flight.

use async_trait::async_trait;
use mongodb::bson::{doc, Bson, DateTime as BsonDateTime, Document};
use mongodb::Collection;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use std::collections::HashMap;

use super::{Job, JobError};

pub const COLLECTION: &str = "api_key_stats";
/// Spring Data's type hint; the class name is an inference from the collection name
/// (openframe.md §11: `com.openframe.data.document.apikey`).
pub const CLASS: &str = "com.openframe.data.document.apikey.ApiKeyStats";

pub struct ApiKeyStatsSync {
    redis: ConnectionManager,
    stats: Collection<Document>,
    /// Keeps the process's shared Mongo client for `stats` (see `open_database`).
    _database: crate::providers::mongo::PlatformDatabase,
    live_prefix: String,
    processing_prefix: String,
}

fn err(what: &str) -> impl Fn(redis::RedisError) -> JobError + '_ {
    move |e| JobError(format!("{what}: {e}"))
}

impl ApiKeyStatsSync {
    pub async fn new(
        redis_url: &str,
        mongo_uri: &str,
        database: Option<String>,
        tenant: &str,
    ) -> Result<Self, JobError> {
        let client = redis::Client::open(redis_url).map_err(err("redis"))?;
        let redis = ConnectionManager::new(client).await.map_err(err("redis"))?;
        let db = crate::providers::mongo::open_database(mongo_uri, database)
            .await
            .map_err(|e| JobError(e.message))?;
        Ok(Self {
            redis,
            stats: db.collection(COLLECTION),
            _database: db,
            live_prefix: format!("of:{{{tenant}}}:stats:"),
            processing_prefix: format!("of:{{{tenant}}}:stats-sync:"),
        })
    }

    /// Every key matching `pattern`, with SCAN (KEYS would block Redis).
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, JobError> {
        let mut conn = self.redis.clone();
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(err("SCAN"))?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Adds one processing hash to Mongo (once per batch) and deletes it.
    async fn finish(&self, processing_key: &str) -> Result<(), JobError> {
        let rest = &processing_key[self.processing_prefix.len()..];
        let Some((key_id, batch)) = rest.rsplit_once(':') else {
            return Err(JobError(format!(
                "unexpected processing key {processing_key}"
            )));
        };
        let mut conn = self.redis.clone();
        let hash: HashMap<String, String> =
            conn.hgetall(processing_key).await.map_err(err("HGETALL"))?;
        let count = |field: &str| -> i64 {
            hash.get(field).map_or(0, |v| {
                v.trim().parse().unwrap_or_else(|_| {
                    tracing::warn!(key = %key_id, "unparsable {field} `{v}` counted as 0");
                    0
                })
            })
        };
        if !hash.is_empty() {
            let mut update = doc! {
                "$inc": {
                    "totalRequests": count("total"),
                    "successfulRequests": count("success"),
                    "failedRequests": count("failed"),
                },
                "$set": { "lastSyncBatch": batch, "_class": CLASS },
            };
            // The gateway writes `LocalDateTime.now()` without a zone; the service ran in UTC.
            if let Some(last) = hash
                .get("lastUsed")
                .and_then(|v| chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f").ok())
            {
                let millis = last.and_utc().timestamp_millis();
                update.insert(
                    "$max",
                    doc! { "lastUsed": Bson::DateTime(BsonDateTime::from_millis(millis)) },
                );
            }
            let filter = doc! { "_id": key_id, "lastSyncBatch": { "$ne": batch } };
            match self.stats.update_one(filter, update).upsert(true).await {
                Ok(_) => {}
                // The batch was already added (crash after the update, before the DEL): the
                // filter matched nothing, and the upsert collided with the existing `_id`.
                Err(e)
                    if e.to_string().contains("E11000")
                        || e.to_string().contains("duplicate key") => {}
                Err(e) => return Err(JobError(format!("updating {COLLECTION}/{key_id}: {e}"))),
            }
        }
        let _: i64 = conn.del(processing_key).await.map_err(err("DEL"))?;
        Ok(())
    }
}

#[async_trait]
impl Job for ApiKeyStatsSync {
    fn lock_name(&self) -> &'static str {
        "apiKeyStatsSync"
    }

    async fn run(&self) -> Result<String, JobError> {
        let mut stuck = std::collections::BTreeSet::new();
        let leftovers = self.scan(&format!("{}*", self.processing_prefix)).await?;
        for key in &leftovers {
            if let Err(e) = self.finish(key).await {
                tracing::error!("{e}; retried next run");
                if let Some((id, _)) = key[self.processing_prefix.len()..].rsplit_once(':') {
                    stuck.insert(id.to_string());
                }
            }
        }
        let mut synced = 0;
        let mut failed = 0;
        for key in self.scan(&format!("{}*", self.live_prefix)).await? {
            let key_id = &key[self.live_prefix.len()..];
            if stuck.contains(key_id) {
                continue;
            }
            let batch = format!("{:016x}", rand::random::<u64>());
            let processing = format!("{}{key_id}:{batch}", self.processing_prefix);
            let mut conn = self.redis.clone();
            match conn.rename::<_, _, ()>(&key, &processing).await {
                Ok(()) => {}
                // Expired (the gateway sets a TTL) or taken by a peer since the SCAN.
                Err(e) if e.to_string().contains("no such key") => continue,
                Err(e) => return Err(err("RENAME")(e)),
            }
            match self.finish(&processing).await {
                Ok(()) => synced += 1,
                Err(e) => {
                    tracing::error!("{e}; retried next run");
                    failed += 1;
                }
            }
        }
        if failed > 0 {
            return Err(JobError(format!(
                "{synced} keys synced, {failed} failed (kept in Redis for the next run)"
            )));
        }
        Ok(format!(
            "{synced} keys synced, {} leftovers finished",
            leftovers.len() - stuck.len()
        ))
    }
}
