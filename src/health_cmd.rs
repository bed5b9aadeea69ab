//! `state-service health`: a grpc.health.v1 client for Docker HEALTHCHECK and
//! scripts, so images need no shell or grpcurl. Exit code 0 only for SERVING.

use std::process::ExitCode;

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::config::HealthArgs;

pub async fn run(args: HealthArgs) -> ExitCode {
    let target = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(target.clone())?
            .connect_timeout(args.timeout)
            .connect()
            .await?;
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
