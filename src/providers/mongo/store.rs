//! Reads and writes of the platform's documents in MongoDB: one lazily opened database per
//! address, shared by every provider of the process; every request counted; the driver's
//! errors mapped to what the engine retries.

use std::sync::Arc;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{ClientOptions, FindOptions};
use mongodb::{Collection, Database};
use tokio::sync::OnceCell;

use super::kinds::RELEASES_COLLECTION;
use super::TIMEOUT;
use crate::provider::{ProviderError, ReadPass, RequestCount, RequestCounter};
use crate::shared;

pub(super) struct Store {
    uri: String,
    database: Option<String>,
    /// Shared with every provider of the process that uses the same URI and database.
    db: Arc<OnceCell<PlatformDatabase>>,
    counter: RequestCounter,
}

/// The driver's server-selection error dumps its whole topology description; an operator
/// needs the address and why it did not answer.
fn server_selection_summary(message: &str) -> Option<String> {
    let after = |key: &str| message.split_once(key).map(|(_, rest)| rest);
    let address = after("Address: ")?.split([',', ' ']).next()?;
    let reason = after("Error: ")
        .map(|rest| rest.split(", labels").next().unwrap_or(rest))
        .map(|r| r.trim_start_matches("Kind: ").trim())
        .unwrap_or("no answer");
    Some(format!(
        "no MongoDB server answered at {address} within {} s ({reason})",
        TIMEOUT.as_secs()
    ))
}

fn transient_or_permanent(what: &str, e: &mongodb::error::Error) -> ProviderError {
    use mongodb::error::ErrorKind as K;
    let message = match &*e.kind {
        K::ServerSelection { message, .. } => server_selection_summary(message)
            .map(|m| format!("{what}: {m}"))
            .unwrap_or_else(|| format!("{what}: {e}")),
        _ => format!("{what}: {e}"),
    };
    match *e.kind {
        K::ServerSelection { .. } | K::Io(_) | K::ConnectionPoolCleared { .. } => {
            ProviderError::transient(message)
        }
        _ if e.contains_label("RetryableWriteError")
            || e.contains_label("TransientTransactionError") =>
        {
            ProviderError::transient(message)
        }
        _ => ProviderError::permanent(message),
    }
}

/// The platform database, holding the process's client for its server (see [`open_database`]).
#[derive(Clone)]
pub struct PlatformDatabase {
    database: Database,
    /// Keeps the shared client's entry alive while this database is in use.
    _client: Arc<mongodb::Client>,
}

impl std::ops::Deref for PlatformDatabase {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.database
    }
}

/// The platform database: `[mongo] database`, else the URI's path, else `openframe`.
///
/// Tenants usually keep their documents in databases of their own on one server, so the
/// client (its connection pool and server monitors) is the process's one per server and
/// credentials: the URI without its database path, and the database credentials are checked
/// against (`authSource`, by default the path's database, as the driver decides).
pub async fn open_database(
    uri: &str,
    database: Option<String>,
) -> Result<PlatformDatabase, ProviderError> {
    let mut options = ClientOptions::parse(uri)
        .await
        .map_err(|e| ProviderError::permanent(format!("invalid [mongo] uri: {e}")))?;
    options.app_name = Some("ofctl".into());
    options.connect_timeout = Some(TIMEOUT);
    options.server_selection_timeout = Some(TIMEOUT);
    let name = database
        .or_else(|| options.default_database.clone())
        .unwrap_or_else(|| "openframe".into());
    let default_source = options
        .default_database
        .clone()
        .unwrap_or_else(|| "admin".into());
    let auth_source = options
        .credential
        .as_mut()
        .map(|credential| credential.source.get_or_insert(default_source).clone());
    let key = format!(
        "{}#auth={}",
        without_database(uri),
        auth_source.unwrap_or_default()
    );
    let client = shared::get_or_make(&key, || {
        mongodb::Client::with_options(options)
            .map_err(|e| transient_or_permanent("cannot create the Mongo client", &e))
    })?;
    Ok(PlatformDatabase {
        database: client.database(&name),
        _client: client,
    })
}

/// `uri` without its `/database` path (options kept): `mongodb://u:p@h1,h2/db?x=1` →
/// `mongodb://u:p@h1,h2?x=1`.
fn without_database(uri: &str) -> String {
    let (before_query, query) = match uri.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (uri, None),
    };
    let authority_start = before_query.find("://").map_or(0, |i| i + 3);
    // User info may hold no unescaped `/`, hosts none at all: the path starts at the first
    // `/` after the last `@`.
    let hosts_start = before_query[authority_start..]
        .rfind('@')
        .map_or(authority_start, |i| authority_start + i + 1);
    let base = match before_query[hosts_start..].find('/') {
        Some(i) => &before_query[..hosts_start + i],
        None => before_query,
    };
    match query {
        Some(q) => format!("{base}?{q}"),
        None => base.to_string(),
    }
}

impl Store {
    pub(super) fn new(uri: String, database: Option<String>) -> Self {
        let db = shared::lazy(&format!("{uri}#{}", database.as_deref().unwrap_or("")));
        Self {
            uri,
            database,
            db,
            counter: RequestCounter::default(),
        }
    }

    pub(super) fn requests(&self) -> RequestCount {
        self.counter.snapshot()
    }

    async fn db(&self) -> Result<&PlatformDatabase, ProviderError> {
        self.db
            .get_or_try_init(|| open_database(&self.uri, self.database.clone()))
            .await
    }

    async fn collection(&self, name: &str) -> Result<Collection<Document>, ProviderError> {
        Ok(self.db().await?.collection(name))
    }

    pub(super) async fn find(
        &self,
        collection: &str,
        filter: Document,
        options: Option<FindOptions>,
    ) -> Result<Vec<Document>, ProviderError> {
        let coll = self.collection(collection).await?;
        self.counter.read();
        let what = format!("find in {collection}");
        let cursor = coll
            .find(filter)
            .with_options(options)
            .await
            .map_err(|e| transient_or_permanent(&what, &e))?;
        cursor
            .try_collect()
            .await
            .map_err(|e| transient_or_permanent(&what, &e))
    }

    /// Every document of `collection`, found once in `pass`: a tenant's platform collections
    /// hold a handful of documents, and several kinds read the same ones (the release version
    /// checks the client configuration and the agents; a watch pass reads the tools for their
    /// connectors, then as declared resources).
    pub(super) async fn find_all(
        &self,
        pass: &ReadPass,
        collection: &str,
    ) -> Result<Arc<Vec<Document>>, ProviderError> {
        pass.once(&format!("mongo/{collection}"), || {
            self.find(collection, doc! {}, None)
        })
        .await
    }

    pub(super) async fn find_one(
        &self,
        collection: &str,
        id: &Bson,
    ) -> Result<Option<Document>, ProviderError> {
        Ok(self
            .find(collection, doc! {"_id": id.clone()}, None)
            .await?
            .into_iter()
            .next())
    }

    async fn write<F, T>(&self, what: &str, op: F) -> Result<T, ProviderError>
    where
        F: std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    {
        self.counter.write();
        op.await.map_err(|e| {
            let error = transient_or_permanent(what, &e);
            // The connection broke during the write: the server may have carried it out.
            if matches!(*e.kind, mongodb::error::ErrorKind::Io(_)) {
                ProviderError::unanswered(error.message)
            } else {
                error
            }
        })
    }

    pub(super) async fn insert(
        &self,
        collection: &str,
        doc: Document,
    ) -> Result<(), ProviderError> {
        let coll = self.collection(collection).await?;
        self.write(&format!("insert into {collection}"), coll.insert_one(doc))
            .await
            .map(drop)
    }

    pub(super) async fn replace(
        &self,
        collection: &str,
        doc: Document,
    ) -> Result<(), ProviderError> {
        let coll = self.collection(collection).await?;
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        self.write(
            &format!("replace in {collection}"),
            coll.replace_one(doc! {"_id": id}, doc).upsert(true),
        )
        .await
        .map(drop)
    }

    pub(super) async fn set(
        &self,
        collection: &str,
        id: &Bson,
        fields: Document,
    ) -> Result<(), ProviderError> {
        let coll = self.collection(collection).await?;
        self.write(
            &format!("update in {collection}"),
            coll.update_one(doc! {"_id": id.clone()}, doc! {"$set": fields}),
        )
        .await
        .map(drop)
    }

    /// The first release version document, as the platform reads it
    /// (`findFirstByOrderByCreatedAtAsc`).
    pub(super) async fn release_document(&self) -> Result<Option<Document>, ProviderError> {
        let options = FindOptions::builder()
            .sort(doc! {"createdAt": 1})
            .limit(1)
            .build();
        Ok(self
            .find(RELEASES_COLLECTION, doc! {}, Some(options))
            .await?
            .into_iter()
            .next())
    }

    pub(super) async fn stored_release_version(&self) -> Result<Option<String>, ProviderError> {
        Ok(self
            .release_document()
            .await?
            .and_then(|d| d.get_str("version").ok().map(str::to_string)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_databases_on_one_server_share_a_client_key() {
        assert_eq!(
            without_database("mongodb://u:p%2Fq@h1:27017,h2/of_t1?authSource=admin&tls=true"),
            "mongodb://u:p%2Fq@h1:27017,h2?authSource=admin&tls=true"
        );
        assert_eq!(without_database("mongodb://h/"), "mongodb://h");
        assert_eq!(without_database("mongodb://h"), "mongodb://h");
        assert_eq!(
            without_database("mongodb+srv://cluster.example/db"),
            "mongodb+srv://cluster.example"
        );
    }

    #[tokio::test]
    async fn one_client_per_server_and_auth_source() {
        let a = open_database("mongodb://127.0.0.1:1/of_a", None)
            .await
            .unwrap();
        let b = open_database("mongodb://127.0.0.1:1/of_b", None)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&a._client, &b._client));
        assert_eq!((a.name(), b.name()), ("of_a", "of_b"));
        // Credentials checked against each path's database: not the same login.
        let c = open_database("mongodb://u:p@127.0.0.1:1/of_a", None)
            .await
            .unwrap();
        let d = open_database("mongodb://u:p@127.0.0.1:1/of_b", None)
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&c._client, &d._client));
        let e = open_database("mongodb://u:p@127.0.0.1:1/of_a?authSource=admin", None)
            .await
            .unwrap();
        let f = open_database("mongodb://u:p@127.0.0.1:1/of_b?authSource=admin", None)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&e._client, &f._client));
    }

    #[test]
    fn server_selection_errors_name_the_address_and_the_reason() {
        let raw = "Server selection timeout: No available servers. Topology: { Type: Single, Servers: [ { Address: 127.0.0.1:36415, Type: Unknown, Error: Kind: I/O error: Connection refused (os error 111), labels: {\"SystemOverloadedError\"}, source: None, server response: None } ] }";
        assert_eq!(
            server_selection_summary(raw).unwrap(),
            "no MongoDB server answered at 127.0.0.1:36415 within 5 s (I/O error: Connection refused (os error 111))"
        );
        assert_eq!(server_selection_summary("no topology"), None);
    }
}
