// The page API:
//
//   import * as Widgets from "{server}static/jupyter_transports/widgets/widgets.js";
//   const widgets = await Widgets.connect({ server, kernelId, token });
//   await widgets.render(element, "main");   // a name the kernel published, or a model id
//   widgets.addEventListener("status", () => console.log(widgets.status));
//   widgets.close();
//
// One WebSocket per page carries every widget comm of the kernel (the multiplexed socket), a
// durable session: a connection that drops comes back by itself ("reconnecting", then "open"),
// with nothing lost either way. When the session cannot go on (the kernel restarted or shut down,
// the page was away longer than the server's session_timeout), the status is "closed" and the
// views stay, greyed out: a page that wants them live again connects anew and renders again.

import "./styles.css";
import { PUBLISHER_TARGET, Publisher } from "./publisher";
import { MuxComm } from "./comm";
import { WIDGET_TARGET, WidgetManager, type Loader } from "./manager";
import { MuxSocket, describe, type Hello, type Status } from "./socket";
import type { ResetReason } from "./session";

export { PUBLISHER_TARGET, WIDGET_TARGET };
export type { Loader, ResetReason, Status };

export type ConnectOptions = {
  /** The Jupyter server's base URL; by default the one this module was served from. */
  server?: string;
  kernelId: string;
  /** The server's token (or rely on the login cookie of the server's origin). */
  token?: string;
  /** Loads widget libraries the bundle lacks: `(moduleName, moduleVersion) => module`. */
  loader?: Loader;
  /** Called with the socket's status on each change ("open", "reconnecting", "closed"), and the
   * Widgets (undefined until connect() made it: the first "open" comes before). */
  onStatus?: (status: Status, widgets: Widgets | undefined) => void;
  /** How long render() waits for a name the kernel has not published yet (ms). */
  timeout?: number;
  /** More query parameters for the socket (they reach the kernel in `transports.query`). */
  query?: Record<string, string>;
};

const DEFAULT_SERVER = new URL("../../../", import.meta.url).href;

export async function connect(options: ConnectOptions): Promise<Widgets> {
  addStylesheet();
  const server = options.server ?? DEFAULT_SERVER;
  const socket = new MuxSocket({
    server,
    kernelId: options.kernelId,
    token: options.token,
    follow: [WIDGET_TARGET, PUBLISHER_TARGET],
    query: options.query,
  });
  let widgets: Widgets | undefined;
  if (options.onStatus) {
    const onStatus = options.onStatus;
    socket.addEventListener("status", () => onStatus(socket.status, widgets));
  }
  let hello: Hello;
  try {
    hello = await socket.hello;
  } catch (error) {
    throw new Error(`could not connect to kernel ${options.kernelId}'s widgets: ${String(error)}`);
  }
  widgets = new Widgets(socket, hello, options);
  await widgets.ready;
  return widgets;
}

export class Widgets extends EventTarget {
  readonly manager: WidgetManager;
  readonly socket: MuxSocket;
  /** Resolves once the kernel's widgets are loaded (from the publisher, or request_states). */
  readonly ready: Promise<void>;
  private readonly publisher: Publisher;
  private readonly timeout: number;

  constructor(socket: MuxSocket, hello: Hello, options: ConnectOptions) {
    super();
    this.socket = socket;
    this.timeout = options.timeout ?? 10_000;
    this.manager = new WidgetManager(socket, hello, options.loader);
    this.publisher = new Publisher(this.manager);
    this.manager.onModel = () => this.publisher.changed();
    this.manager.dispatchOpen = (comm: MuxComm) => {
      if (comm.target_name === PUBLISHER_TARGET) this.publisher.follow(comm);
    };
    socket.addEventListener("status", () => {
      if (socket.status === "closed") {
        // Views stay, shown disconnected (as JupyterLab shows a dead kernel's widgets); a page
        // that wants them live again connects anew and renders again.
        this.manager.disconnect();
        this.publisher.lost(`the widgets socket closed (${describe(this.closeInfo)})`);
      }
      this.dispatchEvent(new Event("status"));
    });
    socket.onResync = (hello) => this.resync(hello);
    this.ready = this.load(hello);
  }

  /** "open", "reconnecting" (the connection dropped: changes made meanwhile wait, and go once
   * it is back) or "closed" (then `closeCode` and `closeReason` say why). */
  get status(): Status {
    return this.socket.status;
  }

  /** How many times the connection dropped and came back. */
  get reconnects(): number {
    return this.socket.reconnects;
  }

  /** Why the latest connection could not resume its session: "overflow" (the page was away
   * long enough to miss more than the server keeps: the state came again, the status is
   * "open"), or "expired", "kernel_restarted", "closed", "unknown" (the status is "closed");
   * null if it resumed. */
  get resetReason(): ResetReason | null {
    return this.socket.resetReason;
  }

  get closeCode(): number | null {
    return this.socket.closeCode;
  }

  get closeReason(): string {
    return this.socket.closeReason;
  }

  private get closeInfo(): { code: number; reason: string } {
    return { code: this.closeCode ?? 0, reason: this.closeReason };
  }

  /** Whether this user may change the widgets (`execute` on kernels); if not, every view is
   * disabled and the page never sends. */
  get canSend(): boolean {
    return this.manager.canSend;
  }

  /** The names the kernel published (`jupyter_transports.widgets.publish`): name → model id. */
  get names(): Record<string, string> {
    return { ...this.publisher.names };
  }

  /** Render a widget into `element`: a published name or a model id (waiting up to `timeout`
   * for the kernel to publish the name or make the model). Returns its view. */
  async render(element: HTMLElement, ref: string): Promise<any> {
    await this.ready;
    const modelId = await this.resolve(ref);
    const model = await this.manager.get_model(modelId);
    const view = await this.manager.create_view(model);
    await this.manager.display_view(view, element);
    if (!this.canSend) element.inert = true; // e.g. an anywidget's own buttons
    element.classList.add("jupyter-transports-widget");
    return view;
  }

  close(): void {
    this.socket.close();
  }

  private async load(hello: Hello): Promise<void> {
    const publisher = hello.comms.find(({ target_name }) => target_name === PUBLISHER_TARGET);
    if (publisher !== undefined) {
      // The kernel greets each page that arrives on its publisher comm with every widget's state.
      const comm = new MuxComm(this.socket, publisher.comm_id, PUBLISHER_TARGET, () => false);
      this.publisher.follow(comm);
      await this.publisher.loaded;
    } else if (this.canSend) {
      await this.manager.loadFromKernel(); // the control comm's request_states, as JupyterLab
    } else {
      console.warn(
        "widgets: this user may only read and the kernel published no widget " +
          "(jupyter_transports.widgets.publish): only widgets created from now on will show",
      );
    }
  }

  /** The connection came back, but frames for the page were lost meanwhile (`reset` /
   * `overflow`): ask the kernel for every model's state again, and apply it. The publisher
   * greets a page when it joins its comm: leave the comm and join again. Without a publisher,
   * the control comm's request_states (a page that may send). */
  private resync(hello: Hello): void {
    this.manager.hello = hello;
    const publisher = hello.comms.find(({ target_name }) => target_name === PUBLISHER_TARGET);
    if (publisher !== undefined) {
      const commId = publisher.comm_id;
      if (this.publisher.commId !== commId) {
        this.publisher.follow(new MuxComm(this.socket, commId, PUBLISHER_TARGET, () => false));
      }
      this.socket.send({ type: "detach", comm_id: commId });
      this.socket.send({ type: "attach", comm_id: commId });
    } else if (this.canSend) {
      this.manager.loadFromKernel().catch((error: unknown) => console.error(error));
    } else {
      console.warn(
        "widgets: frames were lost while the page was away, and this user may only read and " +
          "the kernel published no widget: the widgets show what came before and after",
      );
    }
  }

  private async resolve(ref: string): Promise<string> {
    const modelId = await this.publisher.resolve(ref, this.timeout);
    if (modelId !== undefined) return modelId;
    const why = this.status === "closed" ? ` (the socket closed: ${describe(this.closeInfo)})` : "";
    throw new Error(`no widget model ${ref} and no widget published as "${ref}"${why}`);
  }
}

// The bundle's CSS (ipywidgets' controls, Lumino, Font Awesome, outputs) sits beside this module.
function addStylesheet(): void {
  const href = new URL("widgets.css", import.meta.url).href;
  if (document.querySelector(`link[href="${href}"]`)) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = href;
  document.head.append(link);
}
