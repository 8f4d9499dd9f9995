//! Job-wide execution settings, declared where the API user meets them; the types live in the
//! graph layer ([`crate::graph::config`]) because they are part of the job descriptor.

pub use crate::graph::config::{
    BATCH_RECORDS_LIMIT, CREDITS_PER_CHANNEL_LIMIT, CheckpointConfig, CheckpointingMode,
    ExecutionConfig, RestoreSettings,
};
