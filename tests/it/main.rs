//! Keel's integration tests: real processes and real files.

mod t10_quorum;
mod t11_cli;
mod t12_client;
mod t13_cli_data;
mod t14_python;
mod t16_observability;
mod t20_data;
mod t21_replication;
mod t22_idempotence;
mod t23_pipelined_producer;
mod t24_groups;
mod t25_controlled_shutdown;
mod t30_faults;
mod t40_elastic;
mod t50_storage_crash;
mod t60_topic_defaults;
mod t61_deploy_manifests;
mod t62_local_cluster;
mod t63_client_limits;
