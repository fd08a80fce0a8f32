//! The command line: `new-site`, `serve`, `site ...`, `bench`. Errors end in one clear line.

use crate::api::Sites;
use crate::server;
use crate::service::provisioning;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// docstream: Frappe-compatible sites with event streaming.
#[derive(Debug, Parser)]
#[command(name = "docstream", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a site under DIR/NAME.
    NewSite {
        name: String,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        admin_password: String,
        /// The site's public URL (default http://NAME:8000).
        #[arg(long)]
        url: Option<String>,
        /// A postgres:// URL to keep the site in PostgreSQL instead of SQLite.
        #[arg(long)]
        db: Option<String>,
    },
    /// Serve every site under DIR.
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8000")]
        bind: String,
        /// Log one line per request (method, path without its query, status, time, peer).
        #[arg(long)]
        access_log: bool,
        /// Serve HTTPS with this certificate chain (PEM), read again when it changes; a site
        /// may have its own (tls_cert in its site_config.json), chosen by SNI.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Manage one site.
    Site {
        name: String,
        /// May also follow the action (`site NAME list-users --data-dir DIR`).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        action: SiteAction,
    },
    /// Two wired sites with sample data, served until Ctrl-C.
    Demo {
        #[arg(long, default_value = "docstream-demo")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 8000)]
        port: u16,
    },
    /// Shipped Document Type Mapping templates: what a consuming site (an ERPNext head
    /// office) needs to take another site's documents into its own company.
    Mappings {
        #[command(subcommand)]
        action: MappingsAction,
    },
    /// Measure inserts and reads on temporary sites.
    Bench {
        #[arg(long, default_value_t = 100_000)]
        docs: usize,
        #[arg(long)]
        json: Option<PathBuf>,
        /// A PostgreSQL server (a database URL) for the PostgreSQL figures; the run makes
        /// and drops databases of its own there.
        #[arg(long)]
        db: Option<String>,
        /// Only these groups of measures, comma-separated: stream, verify, wire, waiting_pulls,
        /// concurrent_write, fanout, fanin, multi_process.
        #[arg(long)]
        only: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum MappingsAction {
    /// Print each template's name and what it is for.
    List,
    /// Fill TEMPLATE from the consuming site's own settings, write its Document Type Mappings
    /// there and set them on that site's Event Producer for PRODUCER (adding rows it lacks).
    /// Running it again updates what it wrote.
    Install {
        template: String,
        /// The consuming site (Frappe, ERPNext or docstream), e.g. https://ho.example.com.
        #[arg(long)]
        site: String,
        /// An API key of a user there who may write Document Type Mappings and the Event
        /// Producer.
        #[arg(long)]
        api_key: String,
        /// Its secret (read from the environment, never from the command line).
        #[arg(long = "api-secret-env", default_value = "DOCSTREAM_API_SECRET")]
        api_secret_env: String,
        /// The producer's URL, as the consuming site's Event Producer names it.
        #[arg(long)]
        producer: String,
        /// What the mapping names begin with (default: the producer's host).
        #[arg(long)]
        name: Option<String>,
        /// A value given by hand, over the one read on the site (repeatable): KEY=VALUE.
        #[arg(long = "set", value_parser = key_value)]
        set: Vec<(String, String)>,
        /// Print what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[derive(Debug, Subcommand)]
enum SiteAction {
    /// Change the Administrator's password.
    SetAdminPassword { password: String },
    /// Print one user name per line.
    ListUsers,
    /// Insert the documents of a JSON file (one document with its `doctype`, or a list of
    /// them) as Administrator, all or none, through the same write path as the API (hooks,
    /// update log); print their names.
    Insert { file: PathBuf },
    /// Delete the site (its folder, and its tables on PostgreSQL).
    Drop,
    /// Write a backup of the site (database and site_config.json, compressed) to FILE, while
    /// it serves. FILE holds the site's encryption key: it is made readable by its owner only.
    Backup { file: PathBuf },
    /// Replace the site's database and site_config.json with those of a backup FILE (the site
    /// is made when missing); refused while the site is served. Its consumers are told at
    /// their next pull.
    Restore {
        file: PathBuf,
        /// Restore into this PostgreSQL database (default: the site's own, else the backup's).
        #[arg(long)]
        db: Option<String>,
    },
    /// Compare what this site holds with what its producers sent it, print the differences
    /// and exit 0 when in step, 1 when differences remain, 2 when it could not compare.
    Verify {
        /// Only this producer (its URL); default: every Event Producer.
        #[arg(long)]
        producer: Option<String>,
        /// Fetch and apply what is missing or different here (never what is only here or
        /// edited here, unless the row says the producer wins).
        #[arg(long)]
        repair: bool,
        /// Against a producer without digests (Frappe, docstream before 0.2): compare whole
        /// documents, fetching each, besides their times. With --consumer: fetch each
        /// document the consumer holds and compare it.
        #[arg(long)]
        deep: bool,
        /// Check what this consumer (its URL) holds of what this site sends it, through its
        /// REST lists (for consumers that check nothing themselves: Frappe). Nothing is
        /// repaired: a producer cannot write to its consumers.
        #[arg(long, conflicts_with_all = ["producer", "repair"])]
        consumer: Option<String>,
    },
}

/// An exit code other than 0 that is not an error of the command itself (its message, if any,
/// was printed already).
#[derive(Debug)]
struct Exit(u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let access = match cli.command {
        Command::Serve {
            access_log: true, ..
        } => "info",
        _ => "off",
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,tokio_postgres=warn".into());
    // RUST_LOG may name the access log itself.
    let filter = match filter.contains(crate::api::ACCESS_LOG) {
        true => filter,
        false => format!("{filter},{}={access}", crate::api::ACCESS_LOG),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Exit>().is_some() => {
            ExitCode::from(e.downcast_ref::<Exit>().map_or(1, |x| x.0))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::NewSite {
            name,
            data_dir,
            admin_password,
            url,
            db,
        } => {
            let site = provisioning::new_site(
                &data_dir,
                &name,
                &admin_password,
                url.as_deref(),
                db.as_deref(),
                crate::hooks::install,
            )
            .await?;
            site.store.close().await;
            println!(
                "Created site {name} ({}) in {}",
                site.config.url,
                site.dir.display()
            );
        }
        Command::Serve {
            data_dir,
            bind,
            tls_cert,
            tls_key,
            ..
        } => {
            let sites = Arc::new(Sites::open_all(&data_dir).await?);
            let default = tls_cert.as_deref().zip(tls_key.as_deref());
            let tls = crate::tls::server_config(default, &sites)?;
            let listener = server::bind(&bind)?;
            serve_until_signal(sites, listener, tls).await?;
        }
        Command::Site {
            name,
            data_dir,
            action,
        } => {
            let Some(data_dir) = data_dir else {
                use clap::CommandFactory;
                Cli::command()
                    .error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "the argument --data-dir <DATA_DIR> is required",
                    )
                    .exit();
            };
            if let SiteAction::Restore { file, db } = &action {
                return restore(&data_dir, &name, file, db.as_deref()).await;
            }
            let dir = data_dir.join(&name);
            if !dir.join("site_config.json").is_file() {
                anyhow::bail!("no site {name} in {}", data_dir.display());
            }
            match action {
                SiteAction::SetAdminPassword { password } => {
                    anyhow::ensure!(!password.is_empty(), "the password cannot be empty");
                    let site = crate::hooks::open(&dir).await?;
                    site.set_password("Administrator", &password).await?;
                    site.store.close().await;
                    eprintln!("Administrator password changed for {name}");
                }
                SiteAction::ListUsers => {
                    let site = crate::hooks::open(&dir).await?;
                    for u in provisioning::list_users(&site).await? {
                        println!("{u}");
                    }
                    site.store.close().await;
                }
                SiteAction::Insert { file } => {
                    let text = std::fs::read_to_string(&file)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
                    let docs = documents_of(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                    let site = crate::hooks::open(&dir).await?;
                    let admin = crate::service::permissions::Caller::administrator();
                    let flags = crate::service::documents::WriteFlags::default();
                    let saved = site.insert_docs(&admin, docs, &flags).await;
                    site.store.close().await;
                    for doc in saved? {
                        let name = doc.get("name").cloned().unwrap_or_default();
                        println!("{}", crate::service::documents::name_text(&name));
                    }
                }
                SiteAction::Verify {
                    producer,
                    repair,
                    deep,
                    consumer,
                } => {
                    let site = crate::hooks::open(&dir).await?;
                    let how = crate::streaming::verify::How { repair, deep };
                    let code = match consumer {
                        Some(c) => verify_consumer(&site, &c, deep).await,
                        None => verify(&site, producer, how).await,
                    };
                    site.store.close().await;
                    if code != 0 {
                        return Err(Exit(code).into());
                    }
                }
                SiteAction::Backup { file } => {
                    let m = crate::service::backup::backup(&dir, &file).await?;
                    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                    println!(
                        "Backed up site {name} to {} ({}, {} rows, update log up to {}, {:.1} MB)",
                        file.display(),
                        m.snapshot.backend,
                        m.snapshot.rows,
                        m.snapshot.newest_seq,
                        size as f64 / 1e6
                    );
                }
                SiteAction::Restore { .. } => unreachable!("handled above"),
                SiteAction::Drop => {
                    provisioning::drop_site(&dir).await?;
                    eprintln!("Dropped site {name}");
                }
            }
        }
        Command::Demo { data_dir, port } => crate::demo::run(&data_dir, port).await?,
        Command::Mappings { action } => mappings(action).await?,
        Command::Bench {
            docs,
            json,
            db,
            only,
        } => crate::bench::run(docs, json.as_deref(), db.as_deref(), only.as_deref()).await?,
    }
    Ok(())
}

async fn mappings(action: MappingsAction) -> anyhow::Result<()> {
    use crate::streaming::mapping_templates::{install, templates, Install};
    let MappingsAction::Install {
        template,
        site,
        api_key,
        api_secret_env,
        producer,
        name,
        set,
        dry_run,
    } = action
    else {
        for (name, about) in templates() {
            println!("{name}\n    {about}");
        }
        return Ok(());
    };
    let secret = std::env::var(&api_secret_env).map_err(|_| {
        anyhow::anyhow!("set the API secret in the environment variable {api_secret_env}")
    })?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let remote =
        crate::streaming::remote::RemoteSite::new(http, &site, &api_key, &secret, 16 << 20);
    let ask = Install {
        template,
        producer,
        name,
        given: set.into_iter().collect(),
        dry_run,
    };
    let done = install(&remote, &ask).await?;
    for (key, value, from) in &done.values {
        println!("{key} = {value}  ({from})");
    }
    for (name, what) in &done.mappings {
        println!("Document Type Mapping {name}: {what}");
    }
    for r in &done.rows {
        println!("Event Producer {}: {r}", ask.producer);
    }
    if !done.to_approve.is_empty() {
        println!(
            "approve on {}'s Event Consumer for {site}: {}",
            ask.producer,
            done.to_approve.join(", ")
        );
    }
    if dry_run {
        println!("dry run: nothing written");
    }
    Ok(())
}

/// The `(doctype, document)` pairs of a JSON document or list of documents.
fn documents_of(text: &str) -> anyhow::Result<Vec<(String, crate::store::Doc)>> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("not valid JSON: {e}"))?;
    let list = match value {
        serde_json::Value::Array(a) => a,
        one => vec![one],
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let serde_json::Value::Object(doc) = v else {
                anyhow::bail!("document {} is not a JSON object", i + 1);
            };
            let doctype = doc
                .get("doctype")
                .and_then(serde_json::Value::as_str)
                .filter(|d| !d.is_empty())
                .ok_or_else(|| anyhow::anyhow!("document {} has no \"doctype\"", i + 1))?
                .to_string();
            Ok((doctype, doc))
        })
        .collect()
}

/// Serves until SIGINT/SIGTERM, then drains for at most 9 seconds so the process exits within 10.
async fn serve_until_signal(
    sites: Arc<Sites>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(sites, listener, tls, async {
        let _ = rx.await;
    }));
    server::shutdown_signal().await;
    let _ = tx.send(());
    match tokio::time::timeout(Duration::from_secs(9), server).await {
        Ok(joined) => joined??,
        Err(_) => tracing::warn!("in-flight requests did not finish in 9 s; exiting"),
    }
    Ok(())
}

/// `site NAME restore FILE`: the backup in place, then the site opened once (which brings an
/// older backup's tables up to this version).
async fn restore(
    data_dir: &std::path::Path,
    name: &str,
    file: &std::path::Path,
    db: Option<&str>,
) -> anyhow::Result<()> {
    let r = crate::service::backup::restore(data_dir, name, file, db).await?;
    let dir = std::fs::canonicalize(data_dir)?.join(name);
    let site = crate::hooks::open(&dir).await?;
    site.store.close().await;
    println!(
        "Restored site {name} from {} (made {} UTC by docstream {}, update log up to {}) into {}",
        file.display(),
        r.manifest.made_at,
        r.manifest.docstream,
        r.manifest.snapshot.newest_seq,
        r.db
    );
    println!("Its consumers are told it was restored at their next pull.");
    Ok(())
}

/// `site NAME verify --consumer URL`: what the consumer lacks or holds otherwise on stdout;
/// 0 in step, 1 differences, 2 could not compare (the reason on stderr).
async fn verify_consumer(site: &crate::site::Site, consumer: &str, deep: bool) -> u8 {
    let consumer = consumer.trim_end_matches('/');
    match crate::streaming::verify_consumer::verify_consumer(site, consumer, deep).await {
        Ok(report) => {
            println!(
                "{consumer}: {} documents as of {}, {} differences",
                report.documents,
                report.position,
                report.remaining()
            );
            for line in report.lines() {
                println!("  {line}");
            }
            u8::from(report.remaining() > 0)
        }
        Err(e) => {
            eprintln!("{consumer}: could not compare: {}", e.message());
            2
        }
    }
}

/// `site NAME verify`: the differences per producer on stdout; 0 in step, 1 differences left,
/// 2 could not compare (the reason on stderr).
async fn verify(
    site: &crate::site::Site,
    producer: Option<String>,
    how: crate::streaming::verify::How,
) -> u8 {
    let producers = match producer {
        Some(p) => vec![p.trim_end_matches('/').to_string()],
        None => match crate::streaming::consumer::producer_urls(site).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: cannot list the Event Producers: {}", e.message());
                return 2;
            }
        },
    };
    let mut code = 0;
    for p in producers {
        match crate::streaming::verify::verify(site, &p, how).await {
            Ok(report) => {
                let remaining = report.remaining();
                println!(
                    "{p}: {} documents as of {}, {} differences{}",
                    report.documents,
                    report.position,
                    remaining,
                    if how.repair {
                        format!(" left ({} repaired)", report.repaired)
                    } else {
                        String::new()
                    }
                );
                for line in report.lines() {
                    println!("  {line}");
                }
                if remaining > 0 {
                    code = code.max(1);
                }
            }
            Err(e) => {
                eprintln!("{p}: could not compare: {}", e.message());
                code = 2;
            }
        }
    }
    code
}
