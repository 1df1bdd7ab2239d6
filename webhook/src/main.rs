//! `tslice-webhook`: the admission webhook server (HTTPS). `/mutate`
//! injects the shim into GPU pods, `/validate` checks their `tslice.dev/*`
//! annotations against the namespace ceilings of the broker's own
//! configuration file (one file, so the webhook and the brokers agree).

use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tracing::{info, warn};
use tslice_broker::config::Config;
use tslice_webhook::{inject, validate, Containers, Editors, Injection};

#[derive(Parser)]
#[command(version)]
struct Args {
    /// The broker's configuration file (its [[ceiling]] tables are enforced
    /// here too). Missing: no ceilings.
    #[arg(long, value_name = "FILE", default_value = tslice_broker::config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Where to serve HTTPS.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// The serving certificate (PEM), as the API server will verify it.
    #[arg(long, value_name = "FILE")]
    tls_cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: PathBuf,
    /// The node's directory of libtslice.so (the DaemonSet installs it).
    #[arg(long, default_value = "/var/lib/tslice/lib")]
    host_lib_dir: String,
    /// The node's directory of the broker's socket.
    #[arg(long, default_value = "/run/tslice")]
    host_socket_dir: String,
    /// Mount the node's ld.so.preload over /etc/ld.so.preload instead of
    /// setting LD_PRELOAD (covers programs that clear their environment).
    #[arg(long)]
    ld_so_preload: bool,
    /// Extended resources that mean "uses a GPU" (repeatable).
    #[arg(long = "gpu-resource", default_value = "nvidia.com/gpu")]
    gpu_resources: Vec<String>,
    /// Which containers of a GPU pod get the shim: gpu (those that request
    /// one) or all.
    #[arg(long, default_value = "gpu", value_parser = ["gpu", "all"])]
    containers: String,
    /// Groups that may change tslice.dev/* annotations of running pods
    /// (repeatable; none given: whoever may update the pod).
    #[arg(long = "annotation-editor")]
    editors: Vec<String>,
    /// Log filter.
    #[arg(long, default_value = "info")]
    log: String,
}

struct Ctx {
    cfg: Config,
    inj: Injection,
    editors: Editors,
}

fn main() -> ExitCode {
    let a = Args::parse();
    if let Err(e) = tslice_broker::logs::init("tslice-webhook", &a.log) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let cfg = if a.config.exists() {
        match Config::load(&a.config) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("tslice-webhook: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        warn!(config = %a.config.display(), "no configuration file: no namespace ceilings");
        Config::default()
    };
    let ctx = Arc::new(Ctx {
        cfg,
        inj: Injection {
            host_lib_dir: a.host_lib_dir,
            host_socket_dir: a.host_socket_dir,
            socket_name: "broker.sock".into(),
            ld_so_preload: a.ld_so_preload,
            gpu_resources: a.gpu_resources,
            containers: if a.containers == "all" {
                Containers::All
            } else {
                Containers::Gpu
            },
        },
        editors: Editors(a.editors),
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tslice-webhook: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let tls =
            match axum_server::tls_rustls::RustlsConfig::from_pem_file(&a.tls_cert, &a.tls_key)
                .await
            {
                Ok(t) => t,
                Err(e) => {
                    eprintln!(
                        "tslice-webhook: cannot use --tls-cert {} / --tls-key {}: {e}",
                        a.tls_cert.display(),
                        a.tls_key.display()
                    );
                    return ExitCode::from(2);
                }
            };
        // cert-manager (or an operator) renews the certificate in place:
        // reloaded when the files change.
        let (reload, cert, key) = (tls.clone(), a.tls_cert.clone(), a.tls_key.clone());
        tokio::spawn(async move {
            let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut last = (stamp(&cert), stamp(&key));
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                let now = (stamp(&cert), stamp(&key));
                if now != last {
                    match reload.reload_from_pem_file(&cert, &key).await {
                        Ok(()) => {
                            info!("serving certificate reloaded");
                            last = now;
                        }
                        Err(e) => warn!(
                            "cannot reload the serving certificate (keeping the old one): {e}"
                        ),
                    }
                }
            }
        });
        let (m, v) = (ctx.clone(), ctx.clone());
        let app = Router::new()
            .route("/mutate", post(move |Json(r)| mutate(m.clone(), r)))
            .route("/validate", post(move |Json(r)| admit(v.clone(), r)))
            .route("/healthz", get(|| async { "ok" }));
        info!(listen = %a.listen, "tslice-webhook serving");
        match axum_server::bind_rustls(a.listen, tls)
            .serve(app.into_make_service())
            .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tslice-webhook: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

type Review = AdmissionReview<DynamicObject>;

fn request(r: Review) -> Result<AdmissionRequest<DynamicObject>, Box<Review>> {
    r.try_into().map_err(|e| {
        Box::new(AdmissionResponse::invalid(format!("not an AdmissionReview: {e}")).into_review())
    })
}

async fn mutate(ctx: Arc<Ctx>, r: Review) -> Json<Review> {
    let req = match request(r) {
        Ok(r) => r,
        Err(bad) => return Json(*bad),
    };
    let resp = AdmissionResponse::from(&req);
    let Some(obj) = req.object.as_ref() else {
        return Json(resp.into_review());
    };
    let pod = match serde_json::to_value(obj) {
        Ok(p) => p,
        Err(e) => return Json(resp.deny(format!("cannot read the pod: {e}")).into_review()),
    };
    let injected = match inject(&pod, &ctx.inj) {
        Ok(Some(p)) => p,
        Ok(None) => return Json(resp.into_review()),
        Err(why) => {
            info!(name = %req.name, "refused: {why}");
            return Json(resp.deny(why).into_review());
        }
    };
    let patch = json_patch::diff(&pod, &injected);
    let ns = req.namespace.as_deref().unwrap_or("");
    info!(namespace = %ns, name = %req.name, "injecting the shim");
    match resp.clone().with_patch(patch) {
        Ok(r) => Json(r.into_review()),
        Err(e) => Json(
            resp.deny(format!("cannot make the patch: {e}"))
                .into_review(),
        ),
    }
}

async fn admit(ctx: Arc<Ctx>, r: Review) -> Json<Review> {
    let req = match request(r) {
        Ok(r) => r,
        Err(bad) => return Json(*bad),
    };
    let resp = AdmissionResponse::from(&req);
    let (Some(obj), ns) = (
        req.object.as_ref(),
        req.namespace.clone().unwrap_or_default(),
    ) else {
        return Json(resp.into_review());
    };
    let pod = serde_json::to_value(obj).unwrap_or_default();
    let old = req
        .old_object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok());
    let groups = req.user_info.groups.clone().unwrap_or_default();
    match validate(&ctx.cfg, &ctx.editors, &ns, &pod, old.as_ref(), &groups) {
        Ok(()) => Json(resp.into_review()),
        Err(why) => {
            info!(namespace = %ns, name = %req.name, "refused: {why}");
            Json(resp.deny(why).into_review())
        }
    }
}
