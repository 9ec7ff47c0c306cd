// The search page: picks or takes a dropped photo, asks the model's own V2 REST endpoint for similar images, shows them
// with their thumbnails, and runs more-like-this on a clicked result. Plain JavaScript with no dependencies; all
// server text reaches the page through textContent, never as markup.
"use strict";

const state = {
  model: "image-search",
  query: null, // {kind: "image", name, base64, preview} or {kind: "id", id, namespace[, duplicates]}
  infoNamespace: null, // the namespace the header's image count is for ("" for the server's choice)
};

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const STATUS_WORDS = {
  400: "The server refused the request",
  404: "Not found",
  413: "The photo is too large for this server",
  503: "The search service is unavailable",
};

function describe(error) {
  if (error instanceof ApiError) {
    const words = STATUS_WORDS[error.status] || `The server failed (HTTP ${error.status})`;
    return `${words}: ${error.message}`;
  }
  return `Could not reach the server: ${error.message}`;
}

async function request(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    throw new Error(error.message || "the network request failed");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : response.statusText || "no reason given";
    throw new ApiError(response.status, message);
  }
  return body;
}

function withNamespace(path, namespace) {
  return namespace ? `${path}${path.includes("?") ? "&" : "?"}namespace=${encodeURIComponent(namespace)}` : path;
}

function thumbnailUrl(id, namespace) {
  return withNamespace(`thumbnail?id=${encodeURIComponent(id)}`, namespace);
}

function shortId(id) {
  return id.length > 16 ? `${id.slice(0, 12)}…` : id;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(message) {
  $("status").textContent = message;
}

// What this server searches: V2 model metadata for the model, /ui/info for its collection and size.
async function loadInfo(namespace) {
  state.infoNamespace = namespace;
  try {
    const info = await request(withNamespace("info", namespace));
    state.model = info.model;
    $("endpoint").textContent = `/v2/models/${info.model}/infer`;
    $("collection").textContent = info.collection;
    const inNamespace = `${info.namespace_images} in namespace ${info.namespace}`;
    $("images").textContent = `${info.images} (${inNamespace})`;
    const embedding = info.embedding_model;
    $("embedding-model").textContent = embedding
      ? `${embedding.name}, ${embedding.dimension}-d`
      : "not recorded on the collection";
    if (info.namespace_header) {
      $("namespace").placeholder = `from the ${info.namespace_header} header`;
    }
    const metadata = await request(`../v2/models/${encodeURIComponent(info.model)}`);
    $("model-name").textContent = metadata.name;
    $("model-version").textContent = (metadata.versions || []).join(", ") || "unversioned";
    // Only a model with a text tower (a CLIP package) lists a text input.
    $("text-form").hidden = !(metadata.inputs || []).some((input) => input.name === "text");
  } catch (error) {
    showError(describe(error));
  }
}

function options() {
  const parameters = { return_metadata: true };
  const topK = $("top-k").value.trim();
  if (topK) parameters.top_k = Number(topK);
  const minScore = $("min-score").value.trim();
  if (minScore) parameters.min_score = Number(minScore);
  const diversity = $("diversity").value.trim();
  if (diversity) parameters.diversity = Number(diversity);
  const groupBy = $("group-by").value.trim();
  if (groupBy) parameters.group_by = groupBy;
  const filter = $("filter").value.trim();
  if (filter) parameters.filter = filter;
  const namespace = $("namespace").value.trim();
  if (namespace) parameters.namespace = namespace;
  return parameters;
}

function queryInput(query) {
  if (query.kind === "image") {
    return { name: "image", datatype: "BYTES", shape: [1], data: [query.base64] };
  }
  if (query.kind === "text") {
    return { name: "text", datatype: "BYTES", shape: [1], data: [query.text] };
  }
  return { name: "id", datatype: "BYTES", shape: [1], data: [query.id] };
}

// One query's hits from a V2 response: [1, k] tensors, padded with empty ids when fewer than k matched.
function hitsOf(response) {
  const outputs = Object.fromEntries(response.outputs.map((output) => [output.name, output]));
  const ids = outputs.ids.data;
  const hits = [];
  for (let i = 0; i < ids.length; i += 1) {
    if (!ids[i]) continue;
    let metadata = {};
    if (outputs.metadata && outputs.metadata.data[i]) {
      try {
        metadata = JSON.parse(outputs.metadata.data[i]);
      } catch (error) {
        metadata = { metadata: outputs.metadata.data[i] };
      }
    }
    hits.push({ id: ids[i], score: outputs.scores.data[i], uri: outputs.uris.data[i], metadata });
  }
  return hits;
}

function linkOrText(uri) {
  if (/^https?:\/\//i.test(uri)) {
    const link = document.createElement("a");
    link.href = uri;
    link.rel = "noopener noreferrer";
    link.target = "_blank";
    link.textContent = uri;
    return link;
  }
  const text = document.createElement("span");
  text.textContent = uri;
  return text;
}

function renderHit(hit, rank, namespace) {
  const item = document.createElement("li");
  item.className = "hit";
  item.dataset.id = hit.id;

  const button = document.createElement("button");
  button.type = "button";
  button.className = "more-like-this";
  button.title = "More like this";
  const image = document.createElement("img");
  image.className = "thumbnail";
  image.alt = hit.uri ? `image ${hit.uri}` : `image ${hit.id}`;
  image.src = thumbnailUrl(hit.id, namespace);
  const placeholder = document.createElement("span");
  placeholder.className = "placeholder";
  placeholder.textContent = "no preview";
  placeholder.hidden = true;
  image.addEventListener("error", () => {
    image.hidden = true;
    placeholder.hidden = false;
    item.classList.add("no-preview");
  });
  button.append(image, placeholder);
  button.addEventListener("click", () => search({ kind: "id", id: hit.id, namespace }));

  const duplicates = document.createElement("button");
  duplicates.type = "button";
  duplicates.className = "duplicates-of";
  duplicates.textContent = "duplicates";
  duplicates.title = "Copies of this image, as image-search duplicates finds them";
  duplicates.addEventListener("click", () => search({ kind: "id", id: hit.id, namespace, duplicates: true }));

  const facts = document.createElement("p");
  facts.className = "facts";
  const rankText = document.createElement("span");
  rankText.className = "rank";
  rankText.textContent = `#${rank}`;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score.toFixed(2);
  score.title = `cosine similarity ${hit.score}`;
  const id = document.createElement("code");
  id.className = "id";
  id.textContent = shortId(hit.id);
  id.title = hit.id;
  facts.append(rankText, score, id, duplicates);

  const uri = document.createElement("p");
  uri.className = "uri";
  uri.append(linkOrText(hit.uri));

  const metadata = document.createElement("dl");
  metadata.className = "metadata";
  for (const [key, value] of Object.entries(hit.metadata)) {
    const term = document.createElement("dt");
    term.textContent = key;
    const description = document.createElement("dd");
    description.textContent = typeof value === "string" ? value : JSON.stringify(value);
    metadata.append(term, description);
  }
  item.append(button, facts, uri, metadata);
  return item;
}

function showQuery(query) {
  const section = $("query");
  const image = $("query-image");
  if (query.kind === "image") {
    image.src = query.preview;
    $("query-caption").textContent = `Your photo: ${query.name}`;
  } else if (query.kind === "text") {
    image.removeAttribute("src");
    image.hidden = true;
    $("query-caption").textContent = `Your words: ${query.text}`;
  } else {
    image.src = thumbnailUrl(query.id, query.namespace);
    $("query-caption").textContent = `${query.duplicates ? "Duplicates of" : "More like"} ${shortId(query.id)}`;
  }
  image.alt = $("query-caption").textContent;
  section.hidden = false;
}

function queryLabel(query) {
  if (query.kind === "text") return `text:${query.text}`;
  if (query.kind === "image") return `image:${query.name}`;
  return `${query.duplicates ? "duplicates" : "id"}:${query.id}`;
}

async function search(query) {
  state.query = query;
  const results = $("results");
  const parameters = options();
  showQuery(query);
  showError("");
  results.dataset.state = "searching";
  results.setAttribute("aria-busy", "true");
  setStatus("Searching…");
  try {
    const hits = query.duplicates ? await copiesOf(query.id, parameters) : await searchHits(query, parameters);
    if (state.query !== query) return; // a newer search has started
    results.replaceChildren(...hits.map((hit, i) => renderHit(hit, i + 1, parameters.namespace)));
    setStatus(
      hits.length
        ? `${hits.length} result${hits.length === 1 ? "" : "s"}; click one for more like it.`
        : "No results: try a lower min_score, another filter or another namespace.",
    );
    results.dataset.state = "done";
  } catch (error) {
    if (state.query !== query) return;
    results.replaceChildren();
    setStatus("");
    showError(describe(error));
    results.dataset.state = "error";
  } finally {
    if (state.query === query) {
      results.dataset.query = queryLabel(query);
      results.dataset.searches = String(Number(results.dataset.searches || 0) + 1);
      results.removeAttribute("aria-busy");
    }
  }
  if ((parameters.namespace || "") !== state.infoNamespace) loadInfo(parameters.namespace || "");
}

async function searchHits(query, parameters) {
  const response = await request(`../v2/models/${encodeURIComponent(state.model)}/infer`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ inputs: [queryInput(query)], parameters }),
  });
  return hitsOf(response);
}

// Only the copies, as `image-search duplicates` finds them: by their copy signatures, which a V2 search cannot read.
async function copiesOf(id, parameters) {
  let path = `duplicates?id=${encodeURIComponent(id)}`;
  if (parameters.filter) path += `&filter=${encodeURIComponent(parameters.filter)}`;
  const response = await request(withNamespace(path, parameters.namespace));
  return response.hits;
}

function readAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function searchWithFile(file) {
  if (!file) return;
  let base64;
  try {
    base64 = await readAsBase64(file);
  } catch (error) {
    showError(`Could not read ${file.name}: ${error.message}`);
    return;
  }
  if (state.query && state.query.preview) URL.revokeObjectURL(state.query.preview);
  await search({ kind: "image", name: file.name, base64, preview: URL.createObjectURL(file) });
}

function start() {
  const zone = $("drop-zone");
  const preview = $("query-image");
  preview.addEventListener("error", () => {
    preview.hidden = true;
  });
  preview.addEventListener("load", () => {
    preview.hidden = false;
  });
  $("photo").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = ""; // so that picking the same file again searches again
    searchWithFile(file);
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    searchWithFile(event.dataTransfer.files[0]);
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.query) {
      search(state.query);
    } else {
      showError("Pick or drop a photo first.");
    }
  });
  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text-query").value.trim();
    if (text) {
      search({ kind: "text", text });
    } else {
      showError("Type some words to search for.");
    }
  });
  setStatus("Pick or drop a photo to find similar images.");
  loadInfo($("namespace").value.trim());
}

start();
