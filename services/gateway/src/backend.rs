//! The gRPC clients of the backend services and the one way requests to them
//! are made: with the gateway's deadline (sent as `grpc-timeout`, so the
//! service stops working when the client has given up), the caller's identity
//! and the trace context.

use std::time::Duration;

use gocommerce_platform::Caller;
use gocommerce_platform::grpc::{self, GrpcError};
use gocommerce_proto::auth::v1::auth_service_client::AuthServiceClient;
use gocommerce_proto::notification::v1::notification_service_client::NotificationServiceClient;
use gocommerce_proto::order::v1::order_service_client::OrderServiceClient;
use gocommerce_proto::payment::v1::payment_service_client::PaymentServiceClient;
use gocommerce_proto::product::v1::product_service_client::ProductServiceClient;
use gocommerce_proto::user::v1::user_service_client::UserServiceClient;

use gocommerce_platform::grpc::Traced;

/// One lazily connected client per backend service.
#[derive(Debug, Clone)]
pub struct Backends {
    pub auth: AuthServiceClient<Traced>,
    pub user: UserServiceClient<Traced>,
    pub product: ProductServiceClient<Traced>,
    pub order: OrderServiceClient<Traced>,
    pub payment: PaymentServiceClient<Traced>,
    pub notification: NotificationServiceClient<Traced>,
    timeout: Duration,
}

impl Backends {
    pub fn connect(config: &crate::config::GatewayConfig) -> Result<Self, GrpcError> {
        let traced = grpc::traced;
        Ok(Self {
            auth: AuthServiceClient::new(traced(&config.auth_url)?)
                .max_decoding_message_size(grpc::MAX_ANSWER_BYTES),
            user: UserServiceClient::new(traced(&config.user_url)?)
                .max_decoding_message_size(grpc::MAX_ANSWER_BYTES),
            product: ProductServiceClient::new(traced(&config.product_url)?)
                .max_decoding_message_size(grpc::MAX_ANSWER_BYTES),
            order: OrderServiceClient::new(traced(&config.order_url)?)
                .max_decoding_message_size(grpc::MAX_ANSWER_BYTES),
            payment: PaymentServiceClient::new(traced(&config.payment_url)?)
                .max_decoding_message_size(grpc::MAX_ANSWER_BYTES),
            notification: NotificationServiceClient::new(traced(&config.notification_url)?)
                .max_decoding_message_size(grpc::MAX_ANSWER_BYTES),
            timeout: config.backend_timeout,
        })
    }

    /// The deadline of ordinary backend calls.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A backend request with the deadline and, if known, the caller.
    pub fn request<T>(&self, message: T, caller: Option<&Caller>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        if let Some(caller) = caller {
            caller.write_to(request.metadata_mut());
        }
        request
    }
}
