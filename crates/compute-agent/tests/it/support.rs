//! A stub conductor that records every message an agent sends, and an environment running a real agent with the
//! fake driver against it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Bus, Dispatcher, RemoteError, Rpc, ServerHandle, Target};
use compute_agent::{Agent, AgentConfig, AgentHandle, FakeConfig, FakeDriver};
use compute_rpc::*;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long a test waits for something the agent should do; far beyond what it needs.
pub const WAIT: Duration = Duration::from_secs(30);
/// No test may take longer than this.
const TEST_LIMIT: Duration = Duration::from_secs(120);

pub async fn bounded(test: impl Future<Output = ()>) {
    timeout(TEST_LIMIT, test).await.expect("test did not finish in time");
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A message the conductor received.
#[derive(Clone, Debug)]
pub enum Seen {
    Register(RegisterNode),
    Heartbeat(Heartbeat),
    Resources(ReportResources),
    /// An update and the stub's answer.
    Update(InstanceUpdate, bool),
    Event(ActionEvent),
    BuildFailed(BuildFailed),
    Terminated(InstanceTerminated),
}

impl Seen {
    /// The instance the message is about, if any.
    pub fn instance(&self) -> Option<&str> {
        match self {
            Seen::Update(u, _) => Some(&u.uuid),
            Seen::Event(e) => Some(&e.instance_uuid),
            Seen::BuildFailed(b) => Some(&b.instance_uuid),
            Seen::Terminated(t) => Some(&t.instance_uuid),
            Seen::Register(_) | Seen::Heartbeat(_) | Seen::Resources(_) => None,
        }
    }
}

type Refusal = Box<dyn Fn(&InstanceUpdate) -> bool + Send + Sync>;

/// The stub's behaviour, changeable while it runs.
#[derive(Default)]
pub struct Behaviour {
    /// Updates it matches are answered `false`, as for a deleted instance.
    refuse: Mutex<Option<Refusal>>,
    /// Heartbeats are rejected until the next registration.
    forgotten: AtomicBool,
}

impl Behaviour {
    pub fn refuse_updates(&self, when: impl Fn(&InstanceUpdate) -> bool + Send + Sync + 'static) {
        *self.refuse.lock().unwrap() = Some(Box::new(when));
    }

    /// Forgets the node: heartbeats are rejected until the agent registers again.
    pub fn forget_node(&self) {
        self.forgotten.store(true, Ordering::SeqCst);
    }
}

/// The receiving end of what the stub saw.
pub struct Recorder {
    rx: mpsc::UnboundedReceiver<Seen>,
}

impl Recorder {
    /// Receives until a message matches `pred`; returns everything received, the match last.
    pub async fn until(&mut self, what: &str, mut pred: impl FnMut(&Seen) -> bool) -> Vec<Seen> {
        let mut got = Vec::new();
        loop {
            let seen = timeout(WAIT, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("waited in vain for {what}; saw {got:#?}"))
                .expect("the stub conductor is gone");
            let done = pred(&seen);
            got.push(seen);
            if done {
                return got;
            }
        }
    }
}

pub const NODE_UUID: &str = "5f7a3c46-1f0b-4f55-9d40-1a2b3c4d5e6f";

/// Serves `topic` on `bus` as a conductor that records every message and answers as a healthy one would.
pub async fn stub_conductor(bus: &Bus, topic: &str) -> (ServerHandle, Recorder, Arc<Behaviour>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let behaviour = Arc::new(Behaviour::default());
    let dispatcher = Dispatcher::new();
    let dispatcher = {
        let (tx, b) = (tx.clone(), behaviour.clone());
        dispatcher.on(move |m: RegisterNode| {
            b.forgotten.store(false, Ordering::SeqCst);
            let _ = tx.send(Seen::Register(m));
            async { Ok(NodeRegistered { node_uuid: NODE_UUID.into(), service_id: "1".into(), disabled: false }) }
        })
    };
    let dispatcher = {
        let (tx, b) = (tx.clone(), behaviour.clone());
        dispatcher.on(move |m: Heartbeat| {
            let _ = tx.send(Seen::Heartbeat(m));
            let forgotten = b.forgotten.load(Ordering::SeqCst);
            async move {
                if forgotten { Err(RemoteError::new(HOST_NOT_FOUND, "no such compute host")) } else { Ok(()) }
            }
        })
    };
    let dispatcher = {
        let (tx, b) = (tx.clone(), behaviour.clone());
        dispatcher.on(move |m: InstanceUpdate| {
            let refused = b.refuse.lock().unwrap().as_ref().is_some_and(|refuse| refuse(&m));
            let _ = tx.send(Seen::Update(m, !refused));
            async move { Ok(!refused) }
        })
    };
    let dispatcher = record(dispatcher, &tx, Seen::Resources);
    let dispatcher = record(dispatcher, &tx, Seen::Event);
    let dispatcher = record(dispatcher, &tx, Seen::BuildFailed);
    let dispatcher = record(dispatcher, &tx, Seen::Terminated);
    let server = bus.serve(topic, "conductor-1", dispatcher).await.expect("serve the conductor topic");
    (server, Recorder { rx }, behaviour)
}

fn record<M: Rpc<Reply = ()>>(
    dispatcher: Dispatcher,
    tx: &mpsc::UnboundedSender<Seen>,
    wrap: fn(M) -> Seen,
) -> Dispatcher {
    let tx = tx.clone();
    dispatcher.on(move |m: M| {
        let _ = tx.send(wrap(m));
        async { Ok(()) }
    })
}

/// Agent settings with short intervals.
pub fn agent_config(host: &str) -> AgentConfig {
    let mut config = AgentConfig::new(host);
    config.report_interval = Duration::from_millis(50);
    config.resource_audit_interval = Duration::from_millis(100);
    config.register_backoff_max = Duration::from_millis(200);
    config.rpc_timeout = Duration::from_secs(20);
    config
}

pub fn fake_config() -> FakeConfig {
    FakeConfig { vcpus: 8, memory_mb: 16384, local_gb: 200, ..Default::default() }
}

pub fn flavor() -> FlavorSpec {
    FlavorSpec {
        flavorid: "42".into(),
        name: "m1.nano".into(),
        vcpus: 1,
        memory_mb: 128,
        root_gb: 1,
        ephemeral_gb: 0,
        swap: 0,
        extra_specs: BTreeMap::new(),
    }
}

pub fn instance(name: &str) -> InstanceSpec {
    InstanceSpec {
        uuid: uuid::Uuid::new_v4().to_string(),
        display_name: name.into(),
        hostname: name.into(),
        project_id: "project".into(),
        user_id: "user".into(),
        flavor: flavor(),
        image_ref: "cirros-0.6".into(),
        image_properties: BTreeMap::new(),
        key_name: None,
        key_data: None,
        user_data: None,
        metadata: BTreeMap::new(),
        config_drive: false,
        availability_zone: None,
        launch_index: 0,
    }
}

/// A stub conductor and a registered agent with the fake driver on one bus.
pub struct Env {
    pub bus: Bus,
    pub agent: AgentHandle,
    pub fake: Arc<FakeDriver>,
    pub recorder: Recorder,
    pub behaviour: Arc<Behaviour>,
    pub conductor: ServerHandle,
    pub compute_topic: String,
}

impl Env {
    /// On an isolated in-process broker.
    pub async fn start() -> Env {
        let url = format!("memory://{}", unique("agent-it"));
        Env::start_with(&url, agent_config(&unique("host"))).await
    }

    pub async fn start_with(url: &str, config: AgentConfig) -> Env {
        let bus = Bus::connect(url).await.expect("connect the conductor's bus");
        let (conductor, mut recorder, behaviour) = stub_conductor(&bus, &config.conductor_topic).await;
        let fake = Arc::new(FakeDriver::new(fake_config()));
        let agent_bus = Bus::connect(url).await.expect("connect the agent's bus");
        let compute_topic = config.compute_topic.clone();
        let agent = Agent::start(config, fake.clone(), agent_bus).expect("start the agent");
        timeout(WAIT, agent.registered()).await.expect("the agent registers").expect("the agent runs");
        recorder.until("registration", |s| matches!(s, Seen::Register(_))).await;
        Env { bus, agent, fake, recorder, behaviour, conductor, compute_topic }
    }

    fn target(&self) -> Target {
        Target::server(self.compute_topic.clone(), self.agent.host())
    }

    /// Casts `msg` to the agent.
    pub async fn send<M: Rpc>(&self, msg: &M) {
        self.bus.cast(&self.target(), msg).await.expect("cast to the agent");
    }

    /// Calls the agent.
    pub async fn call<M: Rpc>(&self, msg: &M) -> Result<M::Reply, bus::Error> {
        self.bus.call(&self.target(), msg, WAIT).await
    }

    /// What the conductor saw about `uuid` until `event` finished.
    pub async fn until_finished(&mut self, uuid: &str, event: &str) -> Vec<Seen> {
        let seen = self
            .recorder
            .until(&format!("{event} of {uuid} to finish"), |s| {
                matches!(s, Seen::Event(e) if e.instance_uuid == uuid && e.event == event
                    && matches!(e.phase, EventPhase::Finish { .. }))
            })
            .await;
        seen.into_iter().filter(|s| s.instance() == Some(uuid)).collect()
    }

    /// Builds `instance` and returns what the conductor saw of it.
    pub async fn build(&mut self, instance: &InstanceSpec) -> Vec<Seen> {
        let msg = BuildAndRunInstance { instance: instance.clone(), node: self.agent.host().into(), request_id: req(), vifs: Vec::new(), block_devices: Vec::new() };
        self.send(&msg).await;
        self.until_finished(&instance.uuid, compute_agent::BUILD_EVENT).await
    }

    /// Performs `action` on `instance` and returns what the conductor saw of it.
    pub async fn act(&mut self, instance: &InstanceSpec, action: Action) -> Vec<Seen> {
        let event = action.event_name();
        self.send(&InstanceAction { instance: instance.clone(), action, request_id: req() }).await;
        self.until_finished(&instance.uuid, event).await
    }

    pub async fn terminate(&mut self, uuid: &str) -> Vec<Seen> {
        self.send(&TerminateInstance { uuid: uuid.into(), request_id: req() }).await;
        self.until_finished(uuid, compute_agent::TERMINATE_EVENT).await
    }

    pub async fn stop(self) {
        timeout(WAIT, self.agent.stop()).await.expect("the agent stops");
        self.conductor.stop().await;
        self.bus.close().await;
    }
}

pub fn req() -> String {
    format!("req-{}", uuid::Uuid::new_v4())
}

/// The updates among `seen`.
pub fn updates(seen: &[Seen]) -> Vec<(InstanceChanges, Vec<String>, bool)> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Update(u, applied) => {
                let expected = u.expected_task_state.clone().unwrap_or_default();
                Some((u.changes.clone(), expected.into_iter().map(Option::unwrap_or_default).collect(), *applied))
            }
            _ => None,
        })
        .collect()
}

/// The events among `seen`, as (name, phase).
pub fn events(seen: &[Seen]) -> Vec<(String, EventPhase)> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Event(e) => Some((e.event.clone(), e.phase.clone())),
            _ => None,
        })
        .collect()
}

pub fn task(state: &str) -> InstanceChanges {
    InstanceChanges { task_state: Some(Some(state.into())), ..Default::default() }
}

/// The end of an action as the agent reports it.
pub fn settled(vm: &str, power: PowerState) -> InstanceChanges {
    InstanceChanges {
        vm_state: Some(vm.into()),
        task_state: Some(None),
        power_state: Some(power),
        ..Default::default()
    }
}

pub fn strings(states: &[&str]) -> Vec<String> {
    states.iter().map(|s| s.to_string()).collect()
}

pub fn succeeded(event: &str) -> (String, EventPhase) {
    (event.into(), EventPhase::Finish { success: true, details: None })
}

pub fn started(event: &str) -> (String, EventPhase) {
    (event.into(), EventPhase::Start)
}
