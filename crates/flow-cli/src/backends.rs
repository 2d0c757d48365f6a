//! Turns settings into a store and a cluster factory. The only module that
//! knows concrete backends; cloud clusters and other stores come in behind
//! cargo features (`emr`, `dataproc`, `qubole`, `azure`, `mongo`).
//!
//! Everything here is split into a check that touches nothing
//! ([`plan_store`], [`cluster_factory`]) and the one call that creates
//! state ([`StorePlan::open`]), so bad settings never leave a database file
//! behind.

use crate::exit::CliError;
use crate::settings::{ClusterKind, SettingsFile, StoreKind, SynchronousSetting};
use flow_cluster_local::{LocalClusterFactory, LocalOptions};
use flow_core::{ClusterFactory, FlowStore};
use flow_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use std::path::PathBuf;
use std::sync::Arc;

/// The message for a backend this build was compiled without.
#[cfg(not(all(
    feature = "emr",
    feature = "dataproc",
    feature = "qubole",
    feature = "azure",
    feature = "mongo"
)))]
fn unavailable(settings: &SettingsFile, setting: &str, what: &str, feature: &str) -> CliError {
    CliError::bad_input(format!(
        "{}: {setting} = \"{feature}\": this build has no {what} support; rebuild flow-cli with --features {feature}",
        settings.source
    ))
}

/// A store that can be opened: decided and checked, not yet touched.
#[derive(Debug, Clone)]
pub enum StorePlan {
    Sqlite {
        path: PathBuf,
        options: SqliteOptions,
        /// The default data directory, created on open if missing. A path
        /// named in the settings must be in an existing directory instead,
        /// so a typo fails rather than starting an empty store elsewhere.
        create_dir: Option<PathBuf>,
    },
    /// A MongoDB database (build with `--features mongo`).
    #[cfg(feature = "mongo")]
    Mongo {
        options: flow_store_mongo::MongoOptions,
    },
}

/// Decides the store from the settings, without touching the disk.
pub fn plan_store(settings: &SettingsFile) -> Result<StorePlan, CliError> {
    let store = settings.store();
    match store.kind {
        StoreKind::Sqlite => {
            let (path, create_dir) = match store.path {
                Some(path) => (path, None),
                None => {
                    let dir = settings.data_directory()?;
                    (dir.join("flow.db"), Some(dir))
                }
            };
            let synchronous = match store.synchronous {
                SynchronousSetting::Normal => Synchronous::Normal,
                SynchronousSetting::Full => Synchronous::Full,
            };
            Ok(StorePlan::Sqlite {
                path,
                options: SqliteOptions {
                    synchronous,
                    busy_timeout: store.busy_timeout,
                },
                create_dir,
            })
        }
        #[cfg(feature = "mongo")]
        StoreKind::Mongo => {
            let written = store.uri.clone().ok_or_else(|| {
                CliError::bad_input(format!(
                    "{}: [store] kind = \"mongo\" needs a uri",
                    settings.source
                ))
            })?;
            let uri = match written.strip_prefix("env:") {
                Some(var) => {
                    let uri = std::env::var(var).map_err(|_| {
                        CliError::bad_input(format!(
                            "{}: [store] uri reads the environment variable {var}, which is not set (or not UTF-8)",
                            settings.source
                        ))
                    })?;
                    flow_store_mongo::validate_uri(&uri).map_err(|e| {
                        CliError::bad_input(format!(
                            "{}: [store] uri from {var}: {e}",
                            settings.source
                        ))
                    })?;
                    uri
                }
                None => written,
            };
            let mut options = flow_store_mongo::MongoOptions::new(uri, store.database.clone());
            options.server_selection_timeout = store.server_selection_timeout;
            Ok(StorePlan::Mongo { options })
        }
        #[cfg(not(feature = "mongo"))]
        StoreKind::Mongo => Err(unavailable(settings, "[store] kind", "MongoDB", "mongo")),
    }
}

impl StorePlan {
    /// True if the store holds anything yet. Read-only commands and
    /// refusals decided without a store use it to avoid creating one.
    pub fn exists(&self) -> bool {
        match self {
            StorePlan::Sqlite { path, .. } => path.exists(),
            // A server: asking costs a connection, and opening creates
            // nothing but indexes.
            #[cfg(feature = "mongo")]
            StorePlan::Mongo { .. } => true,
        }
    }

    /// Where the store is, for messages.
    pub fn location(&self) -> String {
        match self {
            StorePlan::Sqlite { path, .. } => path.display().to_string(),
            #[cfg(feature = "mongo")]
            StorePlan::Mongo { options } => format!(
                "{} (database {})",
                flow_store_mongo::redact_uri(&options.uri),
                options.database
            ),
        }
    }

    /// Opens (creating if needed) the store. Blocking; call it outside the
    /// async runtime. A store that cannot be opened is bad input (exit 2):
    /// nothing ran.
    pub fn open(&self) -> Result<Arc<dyn FlowStore>, CliError> {
        match self {
            StorePlan::Sqlite {
                path,
                options,
                create_dir,
            } => {
                if path.is_dir() {
                    return Err(CliError::bad_input(format!(
                        "cannot open store at {}: it is a directory; [store] path names the database file",
                        path.display()
                    )));
                }
                if let Some(dir) = create_dir {
                    // Private (0700, also for parents it creates): the
                    // store holds every run's records.
                    use std::os::unix::fs::DirBuilderExt;
                    let mut builder = std::fs::DirBuilder::new();
                    builder.recursive(true).mode(0o700);
                    builder.create(dir).map_err(|e| {
                        CliError::bad_input(format!(
                            "cannot create the data directory {}: {e}",
                            dir.display()
                        ))
                    })?;
                }
                let store = SqliteStore::open(path, options.clone())
                    .map_err(|e| CliError::bad_input(e.to_string()))?;
                Ok(Arc::new(store))
            }
            // Unreachable server, bad credentials: exit 2, naming the
            // host, never the password.
            #[cfg(feature = "mongo")]
            StorePlan::Mongo { options } => flow_store_mongo::MongoStoreWithRuntime::open(options)
                .map(|store| Arc::new(store) as Arc<dyn FlowStore>)
                .map_err(|e| CliError::bad_input(format!("cannot open the store: {e}"))),
        }
    }
}

/// Makes the cluster factory the settings name. Creates no cluster.
pub fn cluster_factory(settings: &SettingsFile) -> Result<Arc<dyn ClusterFactory>, CliError> {
    let cluster = settings.cluster();
    match cluster.kind {
        ClusterKind::Local => {
            let defaults = LocalOptions::default();
            let options = LocalOptions {
                root: cluster.root.unwrap_or(defaults.root),
                // Job directories outlive the engine: keep them with the
                // store, per user.
                state_dir: settings.data_directory()?.join("local"),
                work_dir: cluster.work_dir.unwrap_or(defaults.work_dir),
                spark_submit: cluster.spark_submit,
                pig: cluster.pig,
                hadoop: cluster.hadoop,
                env: cluster.env,
                scrub_env: settings.secret_sources(),
                kill_grace: cluster.kill_grace.unwrap_or(defaults.kill_grace),
                jobs_per_cluster: cluster
                    .jobs_per_cluster
                    .unwrap_or(defaults.jobs_per_cluster),
            };
            Ok(Arc::new(LocalClusterFactory::new(options)))
        }
        #[cfg(feature = "emr")]
        ClusterKind::Emr => emr_factory(settings),
        #[cfg(not(feature = "emr"))]
        ClusterKind::Emr => Err(unavailable(settings, "[cluster] kind", "EMR", "emr")),
        ClusterKind::Dataproc => dataproc_factory(settings),
        ClusterKind::Qubole => qubole_factory(settings),
        ClusterKind::Azure => azure_factory(settings),
    }
}

/// The EMR cluster factory from `[cluster.emr]` (checked when the file
/// was read). Makes no request: AWS credentials are resolved on first use.
#[cfg(feature = "emr")]
fn emr_factory(settings: &SettingsFile) -> Result<Arc<dyn ClusterFactory>, CliError> {
    let config = settings.emr();
    if config.release_label.is_none() {
        return Err(CliError::bad_input(format!(
            "{}: [cluster] kind = \"emr\" needs [cluster.emr] release_label (e.g. \"emr-7.5.0\") to launch clusters",
            settings.source
        )));
    }
    let factory = flow_cluster_emr::EmrClusterFactory::new(config)
        .map_err(|e| CliError::bad_input(format!("{}: {e}", settings.source)))?;
    Ok(Arc::new(factory))
}

/// The Dataproc clusters of `[cluster.dataproc]`: no request is sent and no
/// token fetched here (a key file is read).
#[cfg(feature = "dataproc")]
fn dataproc_factory(settings: &SettingsFile) -> Result<Arc<dyn ClusterFactory>, CliError> {
    let config = settings.dataproc().ok_or_else(|| {
        CliError::bad_input(format!(
            "{}: [cluster] kind = \"dataproc\" needs a [cluster.dataproc] section (project, region, ...); see docs/src/reference/settings.md",
            settings.source
        ))
    })?;
    let factory = config.builder().build().map_err(|e| {
        CliError::bad_input(format!("{}: [cluster.dataproc]: {e}", settings.source))
    })?;
    Ok(Arc::new(factory))
}

#[cfg(not(feature = "dataproc"))]
fn dataproc_factory(settings: &SettingsFile) -> Result<Arc<dyn ClusterFactory>, CliError> {
    Err(unavailable(
        settings,
        "[cluster] kind",
        "Dataproc",
        "dataproc",
    ))
}

/// The Qubole clusters of `[cluster.qubole]`: the API token is read from
/// its environment variable now; no request is sent.
#[cfg(feature = "qubole")]
fn qubole_factory(settings: &SettingsFile) -> Result<Arc<dyn ClusterFactory>, CliError> {
    let config = settings.qubole().ok_or_else(|| {
        CliError::bad_input(format!(
            "{}: [cluster] kind = \"qubole\" needs a [cluster.qubole] section (cluster_label, token, ...); see docs/src/reference/settings.md",
            settings.source
        ))
    })?;
    let factory = config
        .builder()
        .build()
        .map_err(|e| CliError::bad_input(format!("{}: [cluster.qubole]: {e}", settings.source)))?;
    Ok(Arc::new(factory))
}

#[cfg(not(feature = "qubole"))]
fn qubole_factory(settings: &SettingsFile) -> Result<Arc<dyn ClusterFactory>, CliError> {
    Err(unavailable(settings, "[cluster] kind", "Qubole", "qubole"))
}

/// The HDInsight clusters of `[cluster.azure]`: the gateway's password and
/// the storage credential are read from their environment variables now;
/// no request is sent.
#[cfg(feature = "azure")]
fn azure_factory(settings: &SettingsFile) -> Result<Arc<dyn ClusterFactory>, CliError> {
    let config = settings.azure().ok_or_else(|| {
        CliError::bad_input(format!(
            "{}: [cluster] kind = \"azure\" needs a [cluster.azure] section (gateway or livy_url / webhcat_url, username, password, [cluster.azure.blob]); see docs/src/reference/clusters/azure.md",
            settings.source
        ))
    })?;
    let factory = config
        .builder()
        .build()
        .map_err(|e| CliError::bad_input(format!("{}: {e}", settings.source)))?;
    Ok(Arc::new(factory))
}

#[cfg(not(feature = "azure"))]
fn azure_factory(settings: &SettingsFile) -> Result<Arc<dyn ClusterFactory>, CliError> {
    Err(unavailable(
        settings,
        "[cluster] kind",
        "Azure HDInsight",
        "azure",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_cloud_kind_without_its_feature_says_how_to_rebuild() {
        let s =
            SettingsFile::parse("[cluster]\nkind = \"emr\"\n", Path::new("/x/flow.toml")).unwrap();
        let e = cluster_factory(&s).err().unwrap();
        if cfg!(feature = "emr") {
            assert!(
                e.message.contains("needs [cluster.emr] release_label"),
                "{e}"
            );
            let s = SettingsFile::parse(
                "[cluster]\nkind = \"emr\"\n[cluster.emr]\nname = \"etl\"\nrelease_label = \"emr-7.5.0\"\n",
                Path::new("/x/flow.toml"),
            )
            .unwrap();
            assert_eq!(cluster_factory(&s).unwrap().kind(), "emr");
        } else {
            assert!(
                e.message.contains("rebuild flow-cli with --features emr"),
                "{e}"
            );
        }
    }

    #[test]
    fn dataproc_needs_its_feature_and_its_section() {
        let s = SettingsFile::parse(
            "[cluster]\nkind = \"dataproc\"\n",
            Path::new("/x/flow.toml"),
        )
        .unwrap();
        let e = cluster_factory(&s).err().unwrap();
        if cfg!(feature = "dataproc") {
            assert!(
                e.message.contains("needs a [cluster.dataproc] section"),
                "{e}"
            );
        } else {
            assert!(
                e.message
                    .contains("rebuild flow-cli with --features dataproc"),
                "{e}"
            );
        }
    }

    #[cfg(feature = "dataproc")]
    #[test]
    fn dataproc_settings_make_a_factory_and_bad_ones_name_their_place() {
        let ok = "[cluster]\nkind = \"dataproc\"\n[cluster.dataproc]\nproject = \"p\"\nregion = \"europe-west1\"\nendpoint = \"http://127.0.0.1:9\"\ncredentials_file = \"keys/sa.json\"\n[cluster.dataproc.gcs]\nbucket = \"data\"\nendpoint = \"http://127.0.0.1:9\"\n";
        let s = SettingsFile::parse(ok, Path::new("/x/flow.toml")).unwrap();
        assert_eq!(
            s.dataproc().unwrap().credentials_file.as_deref(),
            Some(Path::new("/x/keys/sa.json"))
        );
        assert_eq!(cluster_factory(&s).unwrap().kind(), "dataproc");
        let e = SettingsFile::parse(
            "[cluster]\nkind = \"dataproc\"\n\n[cluster.dataproc]\nproject = \"p\"\nregion = \"europe-west1\"\nworkers = { count = 1 }\n",
            Path::new("/x/flow.toml"),
        )
        .unwrap_err();
        // Where the section starts.
        assert!(e.message.starts_with("/x/flow.toml:4:1: "), "{e}");
        assert!(e.message.contains("workers.count"), "{e}");
        let e = SettingsFile::parse(
            "[cluster.dataproc]\nproject = \"p\"\nregion = \"r\"\nsecret_key = \"x\"\n",
            Path::new("/x/flow.toml"),
        )
        .unwrap_err();
        assert!(e.message.starts_with("/x/flow.toml:4:1: "), "{e}");
    }

    #[test]
    fn qubole_needs_its_feature_its_section_and_its_token() {
        let s = SettingsFile::parse("[cluster]\nkind = \"qubole\"\n", Path::new("/x/flow.toml"))
            .unwrap();
        let e = cluster_factory(&s).err().unwrap();
        if !cfg!(feature = "qubole") {
            assert!(
                e.message
                    .contains("rebuild flow-cli with --features qubole"),
                "{e}"
            );
            return;
        }
        assert!(
            e.message.contains("needs a [cluster.qubole] section"),
            "{e}"
        );
        let text = "[cluster]\nkind = \"qubole\"\n[cluster.qubole]\ncluster_label = \"etl\"\ntoken = \"env:FLOW_CLI_TEST_QDS_TOKEN\"\nendpoint = \"http://127.0.0.1:9\"\n";
        let s = SettingsFile::parse(text, Path::new("/x/flow.toml")).unwrap();
        let e = cluster_factory(&s).err().unwrap();
        assert!(e.message.contains("FLOW_CLI_TEST_QDS_TOKEN"), "{e}");
        std::env::set_var("FLOW_CLI_TEST_QDS_TOKEN", "qds-cli-test-token");
        assert_eq!(cluster_factory(&s).unwrap().kind(), "qubole");
        assert!(s
            .secret_sources()
            .contains(&"FLOW_CLI_TEST_QDS_TOKEN".to_string()));
        let e = SettingsFile::parse(
            "[cluster.qubole]\ncluster_label = \"etl\"\ntoken = \"qds-plain-token\"\n",
            Path::new("/x/flow.toml"),
        )
        .unwrap_err();
        assert!(e.message.starts_with("/x/flow.toml:1:1: "), "{e}");
        assert!(!e.message.contains("qds-plain-token"), "{e}");
    }

    #[test]
    fn store_durability_and_busy_timeout_reach_the_store_options() {
        let plan = |text: &str| {
            let s = SettingsFile::parse(text, Path::new("/x/flow.toml")).unwrap();
            match plan_store(&s).unwrap() {
                StorePlan::Sqlite { options, .. } => options,
                #[allow(unreachable_patterns)]
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(plan("").synchronous, Synchronous::Normal);
        let full = plan("[store]\nsynchronous = \"full\"\nbusy_timeout = \"750ms\"\n");
        assert_eq!(full.synchronous, Synchronous::Full);
        assert_eq!(full.busy_timeout, std::time::Duration::from_millis(750));
        assert_eq!(
            plan("[store]\nsynchronous = \"normal\"\n").synchronous,
            Synchronous::Normal
        );
    }

    #[test]
    #[allow(irrefutable_let_patterns)]
    fn default_store_is_sqlite_under_the_data_directory() {
        let s = SettingsFile::parse("data_directory = \"d\"\n", Path::new("/x/flow.toml")).unwrap();
        let plan = plan_store(&s).unwrap();
        let StorePlan::Sqlite {
            path, create_dir, ..
        } = &plan
        else {
            panic!("{plan:?}");
        };
        assert_eq!(path, Path::new("/x/d/flow.db"));
        assert_eq!(create_dir.as_deref(), Some(Path::new("/x/d")));
    }

    #[test]
    fn mongo_settings_are_checked_where_they_are_written() {
        let parse = |text: &str| SettingsFile::parse(text, Path::new("/x/flow.toml"));
        let e = parse("[store]\nkind = \"sqlite\"\nuri = \"mongodb://db:27017\"\n").unwrap_err();
        assert!(
            e.message
                .starts_with("/x/flow.toml:3:7: [store] uri is a setting of kind = \"mongo\""),
            "{e}"
        );
        if !cfg!(feature = "mongo") {
            let s = parse("[store]\nkind = \"mongo\"\nuri = \"mongodb://db:27017\"\n").unwrap();
            let e = plan_store(&s).unwrap_err();
            assert!(
                e.message.contains("rebuild flow-cli with --features mongo"),
                "{e}"
            );
            return;
        }
        let e = parse("[store]\nkind = \"mongo\"\n").unwrap_err();
        assert!(e.message.contains("needs uri"), "{e}");
        let e = parse("[store]\nkind = \"mongo\"\nuri = \"mongodb://flow:hunter22@db:http/\"\n")
            .unwrap_err();
        assert!(
            e.message.starts_with("/x/flow.toml:3:7: [store] uri: "),
            "{e}"
        );
        assert!(
            e.message.contains("db:http") && !e.message.contains("hunter22"),
            "{e}"
        );
        let e = parse("[store]\nkind = \"mongo\"\nuri = \"mongodb://db\"\ndatabase = \"a.b\"\n")
            .unwrap_err();
        assert!(
            e.message
                .starts_with("/x/flow.toml:4:12: [store] database: "),
            "{e}"
        );
        std::env::remove_var("FLOW_TEST_UNSET_MONGO_URI");
        let s =
            parse("[store]\nkind = \"mongo\"\nuri = \"env:FLOW_TEST_UNSET_MONGO_URI\"\n").unwrap();
        let e = plan_store(&s).unwrap_err();
        assert!(e.message.contains("FLOW_TEST_UNSET_MONGO_URI"), "{e}");
        std::env::set_var(
            "FLOW_TEST_MONGO_URI",
            "mongodb://flow:hunter22@db1,db2:27018/?replicaSet=rs",
        );
        let s = parse("[store]\nkind = \"mongo\"\nuri = \"env:FLOW_TEST_MONGO_URI\"\ndatabase = \"synergy\"\n").unwrap();
        let plan = plan_store(&s).unwrap();
        assert_eq!(
            plan.location(),
            "mongodb://flow:***@db1,db2:27018/?replicaSet=rs (database synergy)"
        );
        assert!(!format!("{plan:?}").contains("hunter22"), "{plan:?}");
    }
}
