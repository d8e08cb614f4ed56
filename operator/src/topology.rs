//! The shape of GoCommerce as the operator needs to know it: which services
//! exist, their ports, who calls whom, who owns a database and who talks to
//! the broker. Network policies and environment variables are derived from
//! this table, so it is the one place to change when the system grows.

use std::fmt;

/// Port of every service's admin listener (`/metrics`, `/healthz`, `/readyz`).
pub const ADMIN_PORT: i32 = 9090;
/// Port of the gateway's REST API, which also serves `/healthz` and `/readyz`.
pub const GATEWAY_PORT: i32 = 8080;
/// PostgreSQL's port, for built-in instances.
pub const POSTGRES_PORT: i32 = 5432;
/// RabbitMQ's AMQP port, for the built-in broker.
pub const AMQP_PORT: i32 = 5672;

/// One of the processes the `gocommerce` binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Gateway,
    Auth,
    User,
    Product,
    Order,
    Payment,
    Notification,
}

impl Service {
    /// Every service, gateway first.
    pub const ALL: [Service; 7] = [
        Service::Gateway,
        Service::Auth,
        Service::User,
        Service::Product,
        Service::Order,
        Service::Payment,
        Service::Notification,
    ];

    /// The gRPC services behind the gateway.
    pub const BACKENDS: [Service; 6] = [
        Service::Auth,
        Service::User,
        Service::Product,
        Service::Order,
        Service::Payment,
        Service::Notification,
    ];

    /// The subcommand of the `gocommerce` binary, also used in object names.
    pub fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Auth => "auth",
            Service::User => "user",
            Service::Product => "product",
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Notification => "notification",
        }
    }

    /// The `<SVC>` prefix of the service's environment variables.
    pub fn env_prefix(self) -> &'static str {
        match self {
            Service::Gateway => "GATEWAY",
            Service::Auth => "AUTH",
            Service::User => "USER",
            Service::Product => "PRODUCT",
            Service::Order => "ORDER",
            Service::Payment => "PAYMENT",
            Service::Notification => "NOTIFICATION",
        }
    }

    /// The port clients use: the REST port for the gateway, gRPC for the others.
    pub fn port(self) -> i32 {
        match self {
            Service::Gateway => GATEWAY_PORT,
            Service::Auth => 50051,
            Service::User => 50052,
            Service::Product => 50053,
            Service::Order => 50054,
            Service::Payment => 50055,
            Service::Notification => 50056,
        }
    }

    /// Whether the service serves gRPC (and so `grpc.health.v1` probes).
    pub fn is_grpc(self) -> bool {
        self != Service::Gateway
    }

    /// The services this one calls over gRPC.
    pub fn callees(self) -> &'static [Service] {
        match self {
            Service::Gateway => &Service::BACKENDS,
            Service::Auth => &[Service::User],
            Service::Order => &[Service::Product, Service::Payment, Service::User],
            Service::Notification => &[Service::User],
            Service::User | Service::Product | Service::Payment => &[],
        }
    }

    /// The services that call this one: the only pods its network policy admits.
    pub fn callers(self) -> Vec<Service> {
        Service::ALL
            .into_iter()
            .filter(|caller| caller.callees().contains(&self))
            .collect()
    }

    /// Whether the service owns a database.
    pub fn owns_database(self) -> bool {
        self != Service::Gateway
    }

    /// Whether the service publishes or consumes broker events.
    pub fn uses_broker(self) -> bool {
        self != Service::Gateway
    }

    /// The database (and role) name of a database-owning service.
    pub fn database(self) -> String {
        format!("gocommerce_{}", self.name())
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_the_inverse_of_callees() {
        assert_eq!(
            Service::User.callers(),
            vec![
                Service::Gateway,
                Service::Auth,
                Service::Order,
                Service::Notification
            ]
        );
        assert_eq!(
            Service::Payment.callers(),
            vec![Service::Gateway, Service::Order]
        );
        assert!(Service::Gateway.callers().is_empty());
    }

    #[test]
    fn ports_are_distinct() {
        let mut ports: Vec<i32> = Service::ALL.iter().map(|s| s.port()).collect();
        ports.push(ADMIN_PORT);
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), Service::ALL.len() + 1);
    }
}
