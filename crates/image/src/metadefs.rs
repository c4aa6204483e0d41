//! Metadata definitions (Glance's `/v2/metadefs`): a catalog of namespaces that describe which properties,
//! objects and tags apply to which resource types. Who may read or write is policy (the API layer); this layer
//! enforces visibility (admins see every namespace, others public ones and their project's), protection, and
//! validation, and renders Glance's representations.

use serde_json::{Map, Value, json};

use crate::{
    error::Error,
    model::format_time,
    service::{Caller, Image},
    store::{AssociationRow, ItemRow, NamespaceRow, now_micros},
};

pub const OBJECT: &str = "object";
pub const PROPERTY: &str = "property";
pub const TAG: &str = "tag";

const MAX_NAME: usize = 80;

fn not_found(namespace: &str) -> Error {
    Error::NotFound(format!("Metadata definition namespace={namespace} was not found."))
}

fn item_not_found(kind: &str, name: &str, namespace: &str) -> Error {
    Error::NotFound(format!("Metadata definition {kind}={name} not found in namespace={namespace}."))
}

fn opt_string(body: &Value, field: &str) -> Result<Option<String>, Error> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::BadRequest(format!("Invalid input for field '{field}': not a string."))),
    }
}

/// A required name of 1..=80 characters.
fn name_field(body: &Value, field: &str) -> Result<String, Error> {
    match opt_string(body, field)? {
        Some(n) if !n.is_empty() && n.chars().count() <= MAX_NAME => Ok(n),
        Some(_) => {
            Err(Error::BadRequest(format!("Invalid input for field '{field}': length must be 1 to {MAX_NAME}.")))
        }
        None => Err(Error::BadRequest(format!("'{field}' is a required property"))),
    }
}

fn visibility_field(body: &Value, current: &str) -> Result<String, Error> {
    match opt_string(body, "visibility")?.as_deref() {
        None => Ok(current.to_string()),
        Some(v @ ("public" | "private")) => Ok(v.to_string()),
        Some(v) => Err(Error::BadRequest(format!("Invalid visibility value: {v}"))),
    }
}

fn bool_field(body: &Value, field: &str, current: bool) -> Result<bool, Error> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(current),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Error::BadRequest(format!("Invalid input for field '{field}': not a boolean."))),
    }
}

/// `body` without the fields the row itself holds: what an item stores as its definition.
fn definition(body: &Value, drop: &[&str]) -> Result<String, Error> {
    let Value::Object(m) = body else {
        return Err(Error::BadRequest("The request body must be a JSON object.".into()));
    };
    let kept: Map<String, Value> =
        m.iter().filter(|(k, _)| !drop.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(Value::Object(kept).to_string())
}

const ITEM_ROW_FIELDS: &[&str] = &["name", "created_at", "updated_at", "self", "schema"];

fn validate_item(kind: &str, body: &Value) -> Result<(), Error> {
    match kind {
        PROPERTY => {
            opt_string(body, "title")?.ok_or_else(|| Error::BadRequest("'title' is a required property".into()))?;
            match opt_string(body, "type")?.as_deref() {
                Some("array" | "boolean" | "integer" | "number" | "object" | "string") => Ok(()),
                Some(t) => {
                    Err(Error::BadRequest(format!("Invalid input for field 'type': '{t}' is not a valid type.")))
                }
                None => Err(Error::BadRequest("'type' is a required property".into())),
            }
        }
        OBJECT => {
            if body.get("properties").is_some_and(|p| !p.is_object()) {
                return Err(Error::BadRequest("Invalid input for field 'properties': not an object.".into()));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn new_item(namespace: &str, kind: &str, body: &Value, now: i64) -> Result<ItemRow, Error> {
    let name = name_field(body, "name")?;
    validate_item(kind, body)?;
    Ok(ItemRow {
        namespace: namespace.into(),
        kind: kind.into(),
        name,
        body: definition(body, ITEM_ROW_FIELDS)?,
        created_at: now,
        updated_at: now,
    })
}

fn association_from(namespace: &str, body: &Value, now: i64) -> Result<AssociationRow, Error> {
    Ok(AssociationRow {
        namespace: namespace.into(),
        name: name_field(body, "name")?,
        prefix: opt_string(body, "prefix")?,
        properties_target: opt_string(body, "properties_target")?,
        created_at: now,
        updated_at: now,
    })
}

/// A namespace as Glance shows it (without contents).
pub fn namespace_json(ns: &NamespaceRow) -> Value {
    let mut m = json!({
        "namespace": ns.namespace,
        "visibility": ns.visibility,
        "protected": ns.protected,
        "owner": ns.owner,
        "created_at": format_time(ns.created_at),
        "updated_at": format_time(ns.updated_at),
        "self": format!("/v2/metadefs/namespaces/{}", ns.namespace),
        "schema": "/v2/schemas/metadefs/namespace",
    });
    if let Some(d) = &ns.display_name {
        m["display_name"] = json!(d);
    }
    if let Some(d) = &ns.description {
        m["description"] = json!(d);
    }
    m
}

pub fn association_json(a: &AssociationRow) -> Value {
    let mut m = json!({
        "name": a.name,
        "created_at": format_time(a.created_at),
        "updated_at": format_time(a.updated_at),
    });
    if let Some(p) = &a.prefix {
        m["prefix"] = json!(p);
    }
    if let Some(p) = &a.properties_target {
        m["properties_target"] = json!(p);
    }
    m
}

/// An object, property or tag as Glance shows it.
pub fn item_json(item: &ItemRow) -> Value {
    let mut m = match serde_json::from_str::<Value>(&item.body) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    m.insert("name".into(), json!(item.name));
    if item.kind != PROPERTY {
        m.insert("created_at".into(), json!(format_time(item.created_at)));
        m.insert("updated_at".into(), json!(format_time(item.updated_at)));
    }
    if item.kind == OBJECT {
        m.insert("schema".into(), json!("/v2/schemas/metadefs/object"));
        m.insert("self".into(), json!(format!("/v2/metadefs/namespaces/{}/objects/{}", item.namespace, item.name)));
    }
    Value::Object(m)
}

/// The properties of a namespace, keyed by name, as Glance lists them.
pub fn properties_json(items: &[ItemRow]) -> Value {
    Value::Object(items.iter().map(|p| (p.name.clone(), item_json(p))).collect())
}

impl Image {
    /// A namespace the caller can see (404 otherwise).
    pub async fn metadef_namespace(&self, caller: &Caller, namespace: &str) -> Result<NamespaceRow, Error> {
        match self.store().metadef_namespace_get(namespace).await? {
            Some(ns)
                if caller.is_admin
                    || ns.visibility == "public"
                    || (caller.project_id.is_some() && caller.project_id == ns.owner) =>
            {
                Ok(ns)
            }
            _ => Err(not_found(namespace)),
        }
    }

    /// The namespaces the caller can see, filtered by visibility and (any of) resource types.
    pub async fn metadef_namespaces(
        &self,
        caller: &Caller,
        visibility: Option<&str>,
        resource_types: &[String],
    ) -> Result<Vec<Value>, Error> {
        let associations = self.store().metadef_association_list(None).await?;
        let mut out = Vec::new();
        for ns in self.store().metadef_namespace_list().await? {
            let visible = caller.is_admin
                || ns.visibility == "public"
                || (caller.project_id.is_some() && caller.project_id == ns.owner);
            if !visible || visibility.is_some_and(|v| v != ns.visibility) {
                continue;
            }
            let mine: Vec<&AssociationRow> = associations.iter().filter(|a| a.namespace == ns.namespace).collect();
            if !resource_types.is_empty() && !mine.iter().any(|a| resource_types.contains(&a.name)) {
                continue;
            }
            let mut v = namespace_json(&ns);
            if !mine.is_empty() {
                v["resource_type_associations"] = json!(mine.iter().map(|a| association_json(a)).collect::<Vec<_>>());
            }
            out.push(v);
        }
        Ok(out)
    }

    /// A namespace with its contents, as `GET /v2/metadefs/namespaces/{ns}` shows it.
    pub async fn metadef_namespace_json(&self, ns: &NamespaceRow) -> Result<Value, Error> {
        let mut v = namespace_json(ns);
        let store = self.store();
        let assocs = store.metadef_association_list(Some(&ns.namespace)).await?;
        if !assocs.is_empty() {
            v["resource_type_associations"] = json!(assocs.iter().map(association_json).collect::<Vec<_>>());
        }
        let props = store.metadef_item_list(&ns.namespace, PROPERTY).await?;
        if !props.is_empty() {
            v["properties"] = properties_json(&props);
        }
        let objects = store.metadef_item_list(&ns.namespace, OBJECT).await?;
        if !objects.is_empty() {
            v["objects"] = json!(objects.iter().map(item_json).collect::<Vec<_>>());
        }
        let tags = store.metadef_item_list(&ns.namespace, TAG).await?;
        if !tags.is_empty() {
            v["tags"] = json!(tags.iter().map(item_json).collect::<Vec<_>>());
        }
        Ok(v)
    }

    /// Creates a namespace, with the associations, properties, objects and tags the body may carry.
    pub async fn metadef_namespace_create(&self, caller: &Caller, body: &Value) -> Result<Value, Error> {
        let now = now_micros();
        let name = name_field(body, "namespace")?;
        let ns = NamespaceRow {
            display_name: opt_string(body, "display_name")?,
            description: opt_string(body, "description")?,
            visibility: visibility_field(body, "private")?,
            protected: bool_field(body, "protected", false)?,
            owner: opt_string(body, "owner")?.or_else(|| caller.project_id.clone()),
            created_at: now,
            updated_at: now,
            namespace: name.clone(),
        };
        let list = |field: &str| -> Result<Vec<Value>, Error> {
            match body.get(field) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(_) => Err(Error::BadRequest(format!("Invalid input for field '{field}': not an array."))),
            }
        };
        let assocs = list("resource_type_associations")?
            .iter()
            .map(|a| association_from(&name, a, now))
            .collect::<Result<Vec<_>, _>>()?;
        for a in &assocs {
            self.metadef_resource_type_exists(&a.name).await?;
        }
        let objects =
            list("objects")?.iter().map(|o| new_item(&name, OBJECT, o, now)).collect::<Result<Vec<_>, _>>()?;
        let tags = list("tags")?.iter().map(|t| new_item(&name, TAG, t, now)).collect::<Result<Vec<_>, _>>()?;
        let properties = match body.get("properties") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    let mut v = v.clone();
                    if let Value::Object(o) = &mut v {
                        o.insert("name".into(), json!(k));
                    }
                    new_item(&name, PROPERTY, &v, now)
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err(Error::BadRequest("Invalid input for field 'properties': not an object.".into()));
            }
        };
        let store = self.store();
        store.metadef_namespace_insert(&ns).await?;
        for a in &assocs {
            store.metadef_association_insert(a).await?;
        }
        for (kind, items) in [(OBJECT, &objects), (PROPERTY, &properties), (TAG, &tags)] {
            store.metadef_item_replace_all(&name, kind, items).await?;
        }
        self.metadef_namespace_json(&ns).await
    }

    /// Replaces a namespace's attributes (`namespace` may rename it).
    pub async fn metadef_namespace_update(&self, ns: &NamespaceRow, body: &Value) -> Result<Value, Error> {
        let updated = NamespaceRow {
            namespace: match body.get("namespace") {
                None | Some(Value::Null) => ns.namespace.clone(),
                _ => name_field(body, "namespace")?,
            },
            display_name: opt_string(body, "display_name")?,
            description: opt_string(body, "description")?,
            visibility: visibility_field(body, &ns.visibility)?,
            protected: bool_field(body, "protected", ns.protected)?,
            owner: opt_string(body, "owner")?.or_else(|| ns.owner.clone()),
            created_at: ns.created_at,
            updated_at: now_micros(),
        };
        if !self.store().metadef_namespace_update(&ns.namespace, &updated).await? {
            return Err(not_found(&ns.namespace));
        }
        Ok(namespace_json(&updated))
    }

    /// Deletes a namespace and its contents; protected ones are refused (403).
    pub async fn metadef_namespace_delete(&self, ns: &NamespaceRow) -> Result<(), Error> {
        if ns.protected {
            return Err(Error::Forbidden(format!(
                "Metadata definition namespace={} is protected and cannot be deleted.",
                ns.namespace
            )));
        }
        if !self.store().metadef_namespace_delete(&ns.namespace).await? {
            return Err(not_found(&ns.namespace));
        }
        Ok(())
    }

    async fn metadef_resource_type_exists(&self, name: &str) -> Result<(), Error> {
        match self.store().metadef_resource_type_get(name).await? {
            Some(_) => Ok(()),
            None => Err(Error::NotFound(format!("Metadata definition resource-type={name} was not found."))),
        }
    }

    pub async fn metadef_association_create(&self, ns: &NamespaceRow, body: &Value) -> Result<Value, Error> {
        let a = association_from(&ns.namespace, body, now_micros())?;
        self.metadef_resource_type_exists(&a.name).await?;
        self.store().metadef_association_insert(&a).await?;
        Ok(association_json(&a))
    }

    pub async fn metadef_association_delete(&self, ns: &NamespaceRow, name: &str) -> Result<(), Error> {
        if !self.store().metadef_association_delete(&ns.namespace, name).await? {
            return Err(Error::NotFound(format!(
                "Failed to find resource type association of {name} with namespace={}.",
                ns.namespace
            )));
        }
        Ok(())
    }

    pub async fn metadef_item(&self, ns: &NamespaceRow, kind: &str, name: &str) -> Result<ItemRow, Error> {
        self.store()
            .metadef_item_get(&ns.namespace, kind, name)
            .await?
            .ok_or_else(|| item_not_found(kind, name, &ns.namespace))
    }

    pub async fn metadef_item_create(&self, ns: &NamespaceRow, kind: &str, body: &Value) -> Result<ItemRow, Error> {
        let item = new_item(&ns.namespace, kind, body, now_micros())?;
        self.store().metadef_item_insert(&item).await?;
        Ok(item)
    }

    /// Replaces an item's definition (its `name` may rename it; tags have nothing but a name).
    pub async fn metadef_item_update(
        &self,
        ns: &NamespaceRow,
        kind: &str,
        name: &str,
        body: &Value,
    ) -> Result<ItemRow, Error> {
        let old = self.metadef_item(ns, kind, name).await?;
        let mut item = new_item(&ns.namespace, kind, body, now_micros())?;
        item.created_at = old.created_at;
        if !self.store().metadef_item_update(name, &item).await? {
            return Err(item_not_found(kind, name, &ns.namespace));
        }
        Ok(item)
    }

    pub async fn metadef_item_delete(&self, ns: &NamespaceRow, kind: &str, name: &str) -> Result<(), Error> {
        if !self.store().metadef_item_delete(&ns.namespace, kind, name).await? {
            return Err(item_not_found(kind, name, &ns.namespace));
        }
        Ok(())
    }

    /// Creates tags in bulk: they replace the namespace's tags, or (`append`) join them. Duplicates are a 409.
    pub async fn metadef_tags_create(
        &self,
        ns: &NamespaceRow,
        body: &Value,
        append: bool,
    ) -> Result<Vec<ItemRow>, Error> {
        let now = now_micros();
        let Some(tags) = body.get("tags").and_then(Value::as_array) else {
            return Err(Error::BadRequest("'tags' is a required property".into()));
        };
        let mut items = if append { self.store().metadef_item_list(&ns.namespace, TAG).await? } else { Vec::new() };
        for t in tags {
            let item = new_item(&ns.namespace, TAG, t, now)?;
            if items.iter().any(|i| i.name == item.name) {
                return Err(Error::Conflict(format!(
                    "A metadata tag with name={} already exists in namespace={}.",
                    item.name, ns.namespace
                )));
            }
            items.push(item);
        }
        self.store().metadef_item_replace_all(&ns.namespace, TAG, &items).await?;
        Ok(items)
    }

    /// Deletes every tag of a namespace.
    pub async fn metadef_tags_delete(&self, ns: &NamespaceRow) -> Result<(), Error> {
        self.store().metadef_item_replace_all(&ns.namespace, TAG, &[]).await
    }
}
