// The kernel's publisher (jupyter_transports.widgets.publish): a comm of target
// "jupyter_transports.widgets" that greets each page joining it, and it alone, with
// `{"names": {name: model id}, "state": <Widget.get_manager_state()>}`, and tells every page each
// name published later (`{"names": {…}}`). The page never sends on it.

import type { MuxComm } from "./comm";
import type { EmbedState, WidgetManager } from "./manager";

export const PUBLISHER_TARGET = "jupyter_transports.widgets";

export class Publisher {
  readonly names: Record<string, string> = {};
  /** Resolves once the first state arrived. */
  readonly loaded: Promise<void>;
  private resolveLoaded!: () => void;
  private rejectLoaded!: (error: Error) => void;
  private readonly manager: WidgetManager;
  private readonly waiting = new Set<() => void>();
  private comm: MuxComm | undefined;

  constructor(manager: WidgetManager) {
    this.manager = manager;
    this.loaded = new Promise((resolve, reject) => {
      this.resolveLoaded = resolve;
      this.rejectLoaded = reject;
    });
  }

  /** The id of the publisher's comm this page follows, if any. */
  get commId(): string | undefined {
    return this.comm?.comm_id;
  }

  follow(comm: MuxComm): void {
    this.comm = comm;
    comm.on_msg((msg: any) => this.received(msg.content.data ?? {}));
    comm.on_close(() => this.lost("the kernel's widget publisher closed"));
  }

  /** No state will come (a no-op once it came). */
  lost(why: string): void {
    this.rejectLoaded(new Error(why));
  }

  /** The model id `ref` names (a published name or a model id), waiting up to `timeout` ms for
   * the kernel to publish that name or create that model. */
  async resolve(ref: string, timeout: number): Promise<string | undefined> {
    const found = () =>
      this.manager.has_model(ref) ? ref : ref in this.names ? this.names[ref] : undefined;
    if (found() !== undefined) return found();
    await new Promise<void>((resolve) => {
      const check = () => {
        if (found() === undefined) return;
        clearTimeout(timer);
        this.waiting.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiting.delete(check);
        resolve();
      }, timeout);
      this.waiting.add(check);
    });
    return found();
  }

  /** Something new may be named: a name published, a model created. */
  changed(): void {
    for (const check of [...this.waiting]) check();
  }

  private received(data: { names?: Record<string, string>; state?: { state: EmbedState } }): void {
    // The state is loaded before the names are given out, so a name resolves to a model.
    const loading = data.state ? this.manager.loadState(data.state.state) : Promise.resolve();
    loading.then(
      () => {
        Object.assign(this.names, data.names ?? {});
        this.changed();
        if (data.state) this.resolveLoaded();
      },
      (error) => this.rejectLoaded(error),
    );
  }
}
