// The audience builder counts as the rules change, without leaving the page; the Count button does the same without JavaScript.
const builder = document.getElementById("builder");
const shown = document.getElementById("live-count");
if (builder && shown) {
  let timer;
  const count = async () => {
    const query = new URLSearchParams(new FormData(builder));
    const response = await fetch(`${builder.dataset.countUrl}?${query}`, { headers: { Accept: "application/json" } });
    const body = await response.json();
    shown.textContent = response.ok ? body.text : body.error;
    shown.className = response.ok ? "live" : "error";
  };
  const soon = (delay) => () => { clearTimeout(timer); timer = setTimeout(count, delay); };
  builder.addEventListener("input", soon(400));
  builder.addEventListener("change", soon(50));
}
