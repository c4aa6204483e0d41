//! Behavioural tests of the compute agent: a real agent with the fake driver, on a real bus, against a stub
//! conductor that records every message and answers as told.
//!
//! `lifecycle` covers builds, deletes, actions and consoles; `registration` the node's registration, heartbeats
//! and resource reports; `amqp` one run over RabbitMQ; `qemu` the qemu driver with real QEMU; `container` the
//! container driver with real runc.

mod amqp;
mod container;
mod lifecycle;
mod qemu;
mod registration;
mod support;
