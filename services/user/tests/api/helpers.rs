//! Starts the user service on a free port with a fresh database, and builds
//! requests as a customer, an admin or a peer service would send them.

use std::collections::HashMap;

use gocommerce_platform::{Caller, Readiness, Role, Shutdown};
use gocommerce_proto::auth::v1::Role as RolePb;
use gocommerce_proto::common::v1::PostalAddress;
use gocommerce_proto::user::v1::user_service_client::UserServiceClient;
use gocommerce_proto::user::v1::{
    Address, CreateAddressRequest, CreateProfileRequest, ListAddressesRequest, Profile,
};
use gocommerce_user::{Application, UserConfig};
use tonic::transport::Channel;
use uuid::Uuid;

pub struct TestApp {
    pub client: UserServiceClient<Channel>,
    pub pool: sqlx::PgPool,
    pub database: String,
    shutdown: Shutdown,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
        gocommerce_platform::testing::drop_databases(vec![self.database.clone()]);
    }
}

pub async fn spawn_app() -> TestApp {
    let database = format!("gct_user_{}", Uuid::new_v4().simple());
    let env: HashMap<String, String> = [
        ("USER_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        (
            "USER_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:5432/{database}"),
        ),
        ("DATABASE_MAX_CONNECTIONS", "8".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let shutdown = Shutdown::new();
    let app = Application::build(
        UserConfig::from_env(&env).expect("config"),
        Readiness::new(shutdown.clone()),
    )
    .await
    .expect("user service starts");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    let client = UserServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connects");
    let pool = sqlx::PgPool::connect(&env["USER_DATABASE_URL"])
        .await
        .expect("database");
    TestApp {
        client,
        pool,
        database,
        shutdown,
    }
}

/// A request carrying `caller`, as the gateway sends it.
pub fn as_caller<T>(caller: Caller, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    caller.write_to(request.metadata_mut());
    request
}

pub fn as_customer<T>(user: Uuid, message: T) -> tonic::Request<T> {
    as_caller(
        Caller {
            user_id: user,
            role: Role::Customer,
        },
        message,
    )
}

pub fn as_admin<T>(message: T) -> tonic::Request<T> {
    as_caller(
        Caller {
            user_id: Uuid::new_v4(),
            role: Role::Admin,
        },
        message,
    )
}

/// A request from a peer service: no caller metadata at all.
pub fn as_peer<T>(message: T) -> tonic::Request<T> {
    tonic::Request::new(message)
}

pub fn profile_request(user: Uuid, email: &str, name: &str) -> CreateProfileRequest {
    CreateProfileRequest {
        user_id: user.to_string(),
        email: email.to_owned(),
        name: name.to_owned(),
        role: RolePb::Customer as i32,
    }
}

pub fn postal(line1: &str) -> PostalAddress {
    PostalAddress {
        name: "Ada Lovelace".to_owned(),
        line1: line1.to_owned(),
        line2: String::new(),
        city: "London".to_owned(),
        region: String::new(),
        postal_code: "N1 9GU".to_owned(),
        country: "GB".to_owned(),
    }
}

/// The status code and message of a refused call.
pub fn refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (tonic::Code, String) {
    let status = result.expect_err("should be refused");
    (status.code(), status.message().to_owned())
}

impl TestApp {
    /// Registers a customer as auth does at registration.
    pub async fn customer(&self, email: &str) -> Uuid {
        let user = Uuid::new_v4();
        self.client
            .clone()
            .create_profile(as_peer(profile_request(user, email, "Ada Lovelace")))
            .await
            .expect("profile created");
        user
    }

    pub async fn profile(&self, user: Uuid) -> Profile {
        self.client
            .clone()
            .get_profile(as_customer(
                user,
                gocommerce_proto::user::v1::GetProfileRequest {
                    user_id: user.to_string(),
                },
            ))
            .await
            .expect("profile")
            .into_inner()
            .profile
            .expect("profile")
    }

    pub async fn add_address(&self, user: Uuid, line1: &str, is_default: bool) -> Address {
        self.client
            .clone()
            .create_address(as_customer(
                user,
                CreateAddressRequest {
                    user_id: user.to_string(),
                    postal_address: Some(postal(line1)),
                    is_default,
                },
            ))
            .await
            .expect("address created")
            .into_inner()
            .address
            .expect("address")
    }

    pub async fn addresses(&self, user: Uuid) -> Vec<Address> {
        self.client
            .clone()
            .list_addresses(as_customer(
                user,
                ListAddressesRequest {
                    user_id: user.to_string(),
                },
            ))
            .await
            .expect("addresses")
            .into_inner()
            .items
    }
}
