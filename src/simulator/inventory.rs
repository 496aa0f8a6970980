//! `DescribeInstances` in the simulator: the instance list that discovery
//! reads, with the filters discovery sends (tags, tag keys, projects, search
//! keys) and the API's paging rules (`Limit` at most 1000, `Offset` a
//! multiple of it).

use serde_json::{json, Value};

use super::{api_error, page_window, ApiResult, SimState};

/// What `DescribeInstances` tells of an instance besides its ID, region and
/// name. Instances without one are listed as running, in project 0, untagged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// `2` running, `1` in a workflow, `0` initialising, `-2` isolated,
    /// `-3` waiting for deletion.
    pub status: i64,
    pub project_id: i64,
    pub tags: Vec<(String, String)>,
}

impl Default for Listing {
    fn default() -> Self {
        Listing {
            status: 2,
            project_id: 0,
            tags: Vec::new(),
        }
    }
}

impl SimState {
    pub(super) fn describe_instances(&self, region: &str, body: &[u8]) -> ApiResult {
        let request: Value = serde_json::from_slice(body)
            .map_err(|_| api_error("InvalidParameter.InvalidParameter", "the body is not JSON"))?;
        let (limit, offset) = page_window(&request, 1000)?;
        let listings = self
            .listings
            .lock()
            .expect("no code panics holding this lock")
            .clone();
        let matching: Vec<Value> = self
            .scenario
            .instances
            .iter()
            .filter(|i| i.region == region)
            .map(|i| (i, listings.get(&i.id).cloned().unwrap_or_default()))
            .filter(|(i, listing)| matches(&request, &i.id, &i.name, listing))
            .map(|(i, listing)| {
                let tags: Vec<Value> = listing
                    .tags
                    .iter()
                    .map(|(k, v)| json!({ "TagKey": k, "TagValue": v }))
                    .collect();
                json!({
                    "InstanceId": i.id,
                    "InstanceName": i.name,
                    "Region": i.region,
                    "Status": listing.status,
                    "ProjectId": listing.project_id,
                    "InstanceTags": tags,
                    "Engine": "Redis",
                    "ProductType": "standalone",
                })
            })
            .collect();
        let page: Vec<Value> = matching
            .iter()
            .skip(offset as usize)
            .take(limit as usize)
            .cloned()
            .collect();
        Ok(json!({ "TotalCount": matching.len(), "InstanceSet": page }))
    }
}

/// Whether an instance passes the request's filters, as the API applies them.
fn matches(request: &Value, id: &str, name: &str, listing: &Listing) -> bool {
    let strings = |key: &str| -> Vec<String> {
        let items = request
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let has_tag = |key: &str, value: Option<&str>| {
        listing
            .tags
            .iter()
            .any(|(k, v)| k == key && value.is_none_or(|value| v == value))
    };
    let tags = request
        .get("InstanceTags")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tags_match = tags.iter().all(|tag| {
        let key = tag.get("TagKey").and_then(Value::as_str).unwrap_or("");
        has_tag(key, tag.get("TagValue").and_then(Value::as_str))
    });
    let keys_match = strings("TagKeys").iter().all(|key| has_tag(key, None));
    let projects: Vec<i64> = request
        .get("ProjectIds")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let project_matches = projects.is_empty() || projects.contains(&listing.project_id);
    // Names match in part, IDs in full.
    let search = strings("SearchKeys");
    let search_matches =
        search.is_empty() || search.iter().any(|k| k == id || name.contains(k.as_str()));
    tags_match && keys_match && project_matches && search_matches
}
