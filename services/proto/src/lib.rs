//! Generated protobuf messages, gRPC clients and servers for every GoCommerce
//! service, plus the encoded descriptor set that server reflection serves.

#![allow(clippy::all, missing_debug_implementations)]

/// Encoded `FileDescriptorSet` of every GoCommerce proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/gocommerce_descriptor.bin"));

pub mod common {
    pub mod v1 {
        tonic::include_proto!("gocommerce.common.v1");
    }
}

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("gocommerce.auth.v1");
    }
}

pub mod user {
    pub mod v1 {
        tonic::include_proto!("gocommerce.user.v1");
    }
}

pub mod product {
    pub mod v1 {
        tonic::include_proto!("gocommerce.product.v1");
    }
}

pub mod order {
    pub mod v1 {
        tonic::include_proto!("gocommerce.order.v1");
    }
}

pub mod payment {
    pub mod v1 {
        tonic::include_proto!("gocommerce.payment.v1");
    }
}

pub mod notification {
    pub mod v1 {
        tonic::include_proto!("gocommerce.notification.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("gocommerce.events.v1");
    }
}
