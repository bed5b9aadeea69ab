//! `state-service health`: a grpc.health.v1 client for Docker HEALTHCHECK and
//! scripts, so images need no shell or grpcurl. Exit code 0 only for SERVING.
//! With `--ca-file` it speaks TLS (Kubernetes' built-in gRPC probe cannot, so
//! a TLS server is probed with this command as an exec probe). Health needs
//! no credentials.

use std::process::ExitCode;

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::config::HealthArgs;

pub async fn run(args: HealthArgs) -> ExitCode {
    crate::tls::install_crypto_provider();
    let scheme = if args.ca_file.is_some() {
        "https"
    } else {
        "http"
    };
    let target = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("{scheme}://{}", args.addr)
    };
    let check = async {
        let mut endpoint =
            tonic::transport::Endpoint::from_shared(target.clone())?.connect_timeout(args.timeout);
        if let Some(ca) = &args.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read --ca-file {}: {e}", ca.display()))?;
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem));
            if let Some(domain) = &args.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint.connect().await?;
        let resp = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(resp.into_inner().status())
    };
    match tokio::time::timeout(args.timeout, check).await {
        Ok(Ok(ServingStatus::Serving)) => {
            println!("SERVING");
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            println!("{}", status.as_str_name());
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("health check of {target} failed: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "health check of {target} timed out after {:?}",
                args.timeout
            );
            ExitCode::FAILURE
        }
    }
}
